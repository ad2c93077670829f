"""The sidecar's ledger (atomic check-and-reserve, settle, windows) and the fleet slicing plan,
including a randomized proof of the overspend bound with crashes and stale reports."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from configsvc.budgets.controller import holders_of
from configsvc.budgets.quota_plan import Holder, plan
from configsvc.budgets.quota_view import view
from holdfast.keyspace.budget import Budget
from holdfast.keyspace.quota import DEPARTED, Quotas, SpendReport
from sidecar.budgets.ledger import Ledger

NOW = 1_000_000.0


def ledger_with(*budgets: Budget) -> Ledger:
    ledger = Ledger()
    ledger.sync({b.scope: b for b in budgets}, NOW)
    return ledger


def test_admit_reserves_on_every_scope_or_none() -> None:
    ledger = ledger_with(
        Budget(scope="session:s1", tokens=100, window="1h"),
        Budget(scope="tenant:t", tokens=1000, window="1h"),
    )
    meters = ledger.applicable(["session:s1", "tenant:t", "global"], NOW)
    assert [m.scope for m in meters] == ["session:s1", "tenant:t"]
    ledger.set_grant("tenant:t", meters[1].tally.span.id, 1000, fleet_used=0)
    r1, refused = ledger.admit(meters, 60, NOW)
    assert r1 is not None and not refused
    r2, refused = ledger.admit(meters, 60, NOW)
    assert r2 is None and [r.scope for r in refused] == ["session:s1"]
    assert meters[1].tally.reserved == 60  # the tenant scope was not touched by the refusal
    assert "limit 100 tokens per 1h (rolling)" in refused[0].message()
    assert refused[0].retry_after == 60  # only a reservation in flight: one sub-bucket
    Ledger.settle(r1, 25, estimated=False)
    Ledger.settle(r1, 25, estimated=False)  # idempotent
    assert (meters[0].tally.spent, meters[0].tally.reserved) == (25, 0)
    assert ledger.admit(meters, 75, NOW)[0] is not None
    r3, refused = ledger.admit(meters, 1, NOW)
    assert r3 is None
    # the 25 settled tokens' bucket leaves the rolling hour 61 buckets after it began
    assert refused[0].retry_after == int((NOW // 60 + 61) * 60 - NOW)


def test_window_turn_starts_fresh_and_old_reservations_settle_into_their_window() -> None:
    ledger = ledger_with(Budget(scope="global", tokens=10, window="day"))
    [meter] = ledger.applicable(["global"], NOW)
    ledger.set_grant("global", meter.tally.span.id, 10, fleet_used=0)
    old, _ = ledger.admit([meter], 10, NOW)
    assert old is not None
    [meter] = ledger.applicable(["global"], NOW + 86400)
    assert meter.used == 0  # a fleet scope without a grant for this window admits nothing
    assert ledger.admit([meter], 1, NOW + 60)[0] is None


def test_local_scope_new_window() -> None:
    ledger = ledger_with(Budget(scope="session:s", tokens=10, window="month"))
    [meter] = ledger.applicable(["session:s"], NOW)
    old, _ = ledger.admit([meter], 10, NOW)
    assert old is not None
    [meter] = ledger.applicable(["session:s"], NOW + 31 * 86400)
    Ledger.settle(old, 10, estimated=True)
    assert meter.used == 0 and ledger.admit([meter], 10, NOW + 31 * 86400)[0] is not None


def test_fleet_allowance_is_the_grant_minus_what_was_given_back() -> None:
    ledger = ledger_with(Budget(scope="agent:a", tokens=1000, window="1h"))
    [meter] = ledger.applicable(["agent:a"], NOW)
    assert meter.allowance == 0
    ledger.set_grant("agent:a", meter.tally.span.id, 300, fleet_used=200)
    assert meter.allowance == 300 and meter.remaining == 800
    ledger.admit([meter], 100, NOW)
    assert meter.give_back(50) == 150 and meter.allowance == 150
    assert not meter.fits(51) and meter.fits(50)
    ledger.set_grant("agent:a", "1h@0", 900, fleet_used=0)  # another window's grant
    assert meter.allowance == 0


def test_plan_tops_up_live_holders_only_and_never_over_claims() -> None:
    holders = {
        "a": Holder(grant=100, used=100, live=True),
        "b": Holder(grant=0, live=True),
        "dead": Holder(grant=300, used=10, live=False),
    }
    grants = plan(1000, holders)
    assert grants["dead"] == 300
    assert grants["a"] > 100 and grants["b"] > 0
    assert sum(grants.values()) <= 1000
    # a holder that refused a large request asks for it through ``want``
    tight = {"x": Holder(grant=900, used=900, live=True), "b": Holder(live=True, want=80)}
    topped = plan(1000, tight)
    assert topped["b"] == 80  # more than the equal share of 50
    assert topped["x"] == 920 and sum(topped.values()) == 1000


def test_holders_of_reads_reports_of_the_window_only() -> None:
    q = Quotas(scope="global", window="w2", limit=10, grants={"a": 5, "gone": 3})
    reports = [
        SpendReport(scope="global", holder="a", window="w2", used=4, returned=1),
        SpendReport(scope="global", holder="new", window="w1", used=9),
    ]
    h = holders_of(q, "w2", reports)
    assert h["a"] == Holder(grant=5, used=4, returned=1, live=True)
    assert h["gone"] == Holder(grant=3)
    assert h["new"] == Holder(live=True)
    assert holders_of(q, "w3", reports)["a"].grant == 0


def test_a_restart_frees_what_the_old_process_did_not_use() -> None:
    """The audit's case: limit 1000, 950 really used, one sidecar restarted. Its final report
    closes its slice at what it used; the fleet shows 950 used and grants the last 50."""
    budget = Budget(scope="agent:a", tokens=1000, window="day")
    a, b = ledger_with(budget), ledger_with(budget)
    span = a.meters["agent:a"].tally.span.id
    a.set_grant("agent:a", span, 600, 0)
    b.set_grant("agent:a", span, 400, 0)
    for ledger, spend in ((a, 550), (b, 400)):
        res, _ = ledger.admit([ledger.meters["agent:a"]], spend, NOW)
        assert res is not None
        Ledger.settle(res, spend, estimated=False)
    quotas = Quotas(scope="agent:a", window=span, limit=1000, grants={"a.1": 600, "b.1": 400})
    ma = a.meters["agent:a"]
    assert ma.give_back(0) == 50 and ma.allowance == ma.used == 550  # a gracefully leaves
    final = SpendReport(
        scope="agent:a", holder="a.1", window=span, used=550, returned=50, final=True
    )
    live_b = SpendReport(scope="agent:a", holder="b.1", window=span, used=400)
    fleet = view(budget, quotas, [final, live_b], NOW)
    assert fleet.used() == 950  # not 1350 (its whole grant again, plus what it used)
    assert fleet.departed == 550 and "a.1" not in fleet.holders
    grants = fleet.plan(1000)
    assert grants["b.1"] > 400 and grants[DEPARTED] == 550  # the last 50 are free again
    # The restarted process (a new holder id) reports; the final report is read again at
    # every tick for a while: folded once, never twice, and the 50 get handed out.
    reborn = SpendReport(scope="agent:a", holder="a.2", window=span, used=0)
    for _ in range(10):
        quotas = Quotas(
            scope="agent:a", window=span, limit=1000, grants=grants, reported=fleet.reported()
        )
        assert Quotas.decode(quotas.encode()) == quotas
        fleet = view(budget, quotas, [final, live_b, reborn], NOW)
        assert fleet.used() == 950 and fleet.departed == 550
        grants = fleet.plan(1000)
    assert grants["b.1"] + grants["a.2"] == 450 and sum(grants.values()) == 1000


def test_a_holder_gone_without_a_final_report_counts_what_it_could_still_spend() -> None:
    """A crash (or a cut-off): its report is gone, but what it gave back was seen and still
    counts; its claim is its last reported use plus the rest of its slice, no more."""
    q = Quotas(scope="global", window="w", limit=1000, grants={"x.1": 600, "y.1": 100})
    live = [
        SpendReport(scope="global", holder="x.1", window="w", used=200, returned=300),
        SpendReport(scope="global", holder="y.1", window="w", used=100),
    ]
    q2 = Quotas(
        scope="global",
        window="w",
        limit=1000,
        grants=q.grants,
        reported={"x.1": (200, 300), "y.1": (100, 0)},  # what the controller wrote down
    )
    assert holders_of(q, "w", live)["x.1"].claim == holders_of(q2, "w", live)["x.1"].claim
    gone = holders_of(q2, "w", live[1:])  # x's lease expired: its report is gone
    assert gone["x.1"] == Holder(grant=600, used=200, returned=300)
    assert gone["x.1"].claim == 300  # not its whole grant of 600
    assert sum(h.claim for h in gone.values()) <= 1000
    # a report read later may be staler than what was seen: ``returned`` never goes back
    stale = [SpendReport(scope="global", holder="x.1", window="w", used=150, returned=100)]
    assert holders_of(q2, "w", stale)["x.1"].returned == 300


def test_a_sidecar_only_meters_the_scopes_that_can_apply_to_it() -> None:
    budgets = [
        Budget(scope="agent:mine", tokens=100, window="day"),
        Budget(scope="agent:other", tokens=100, window="day"),
        Budget(scope="tenant:t", tokens=100, window="day"),
        Budget(scope="global", tokens=100, window="day"),
        Budget(scope="session:s", tokens=100, window="day"),
    ]
    ledger = Ledger(agent="mine")
    ledger.sync({b.scope: b for b in budgets}, NOW)
    assert sorted(ledger.meters) == ["agent:mine", "global", "session:s", "tenant:t"]
    assert sorted(ledger_with(*budgets).meters) == sorted(b.scope for b in budgets)


@dataclass
class _Fleet:
    """A simulated fleet on one calendar window: sidecars (ledgers) and the controller."""

    limit: int
    budget: Budget
    quotas: Quotas
    alive: dict[str, Ledger] = field(default_factory=dict)
    finals: dict[str, tuple[SpendReport, int]] = field(default_factory=dict)  # -> last step read
    history: list[list[SpendReport]] = field(default_factory=list)
    gone_used: int = 0  # what departed sidecars admitted (crashed or not): it stays spent
    serial: int = 0
    departures: int = 0

    @classmethod
    def of(cls, limit: int) -> _Fleet:
        budget = Budget(scope="agent:a", tokens=limit, window="1d")
        return cls(limit, budget, Quotas(scope="agent:a", window="", limit=limit))

    @property
    def admitted(self) -> int:
        return self.gone_used + sum(led.meters["agent:a"].used for led in self.alive.values())

    def step(
        self,
        step: int,
        rng: random.Random,
        *,
        crash: float,
        restart: float,
        read_for: tuple[int, ...] = (-1, 0, 3, 40),  # ticks a final report stays (-1: unread)
    ) -> None:
        while len(self.alive) < 5:
            self.serial += 1
            self.alive[f"s{self.serial}.0"] = ledger_with(self.budget)
        window = next(iter(self.alive.values())).meters["agent:a"].tally.span.id
        q = self.quotas
        for holder, ledger in self.alive.items():  # sidecars follow their slices
            ledger.set_grant("agent:a", q.window, q.grants.get(holder, 0), q.used)
        for ledger in self.alive.values():  # traffic
            meter = ledger.meters["agent:a"]
            res, _ = ledger.admit([meter], rng.randint(1, 400), NOW)
            if res is not None and rng.random() < 0.7:
                Ledger.settle(res, rng.randint(0, res.amount), estimated=False)
            if rng.random() < 0.05:
                meter.give_back(rng.randint(0, 200))
        self.history.append([self._report(h, led, window) for h, led in self.alive.items()])
        roll = rng.random()
        if roll < crash:  # a crash: everything it reserved or spent stays spent
            victim = rng.choice(sorted(self.alive))
            self.gone_used += self.alive.pop(victim).meters["agent:a"].used
        elif roll < crash + restart:
            self.leave(rng.choice(sorted(self.alive)), window, step + rng.choice(read_for))
        seen = self.history[-rng.randint(1, min(4, len(self.history)))]  # up to 3 ticks stale
        self.tick(step, window, [r for r in seen if r.holder in self.alive])

    @staticmethod
    def _report(holder: str, ledger: Ledger, window: str, final: bool = False) -> SpendReport:
        m = ledger.meters["agent:a"]
        return SpendReport(
            scope="agent:a",
            holder=holder,
            window=window,
            used=m.used,
            returned=m.returned,
            want=m.tally.want,
            final=final,
        )

    def leave(self, holder: str, window: str, read_until: int) -> None:
        """A graceful shutdown: give everything unused back, final report (read until a step;
        before the current one: never read), gone."""
        ledger = self.alive.pop(holder)
        ledger.meters["agent:a"].give_back(0)
        self.gone_used += ledger.meters["agent:a"].used
        self.finals[holder] = (self._report(holder, ledger, window, final=True), read_until)
        self.departures += 1

    def tick(self, step: int, window: str, seen: list[SpendReport]) -> None:
        seen = seen + [r for r, last in self.finals.values() if last >= step]
        fleet = view(self.budget, self.quotas, seen, NOW)
        grants = {k: v for k, v in fleet.plan(self.limit).items() if v > 0}
        for h in grants:  # grants never shrink (a departed holder's is folded, never reissued)
            assert h == DEPARTED or grants[h] >= self.quotas.grants.get(h, 0)
        self.quotas = Quotas(
            scope="agent:a",
            window=window,
            limit=self.limit,
            grants=grants,
            used=fleet.used(),
            reported=fleet.reported(),
        )
        assert self.admitted <= self.limit, f"step {step}: {self.admitted} > {self.limit}"


def test_fleet_never_admits_beyond_the_limit_with_crashes_and_stale_reports() -> None:
    """The bound: with reservations that cover the worst case, over-admission is 0 tokens.

    Five sidecars, a controller planning from reports that may be several ticks old, random
    give-backs, random crashes (a crashed sidecar's reservations and slice stay counted: it
    may have spent them) and graceful restarts (a final report the controller may read at
    once, later, or never), each replaced under a new holder id. Every tick checks what the
    whole fleet, departed sidecars included, ever admitted against the limit."""
    rng = random.Random(7)
    fleet = _Fleet.of(20_000)
    for step in range(3000):
        fleet.step(step, rng, crash=0.02, restart=0.02)
    assert fleet.departures > 20
    assert fleet.admitted > fleet.limit * 0.9  # and the budget does get used


def test_graceful_restarts_strand_nothing() -> None:
    """Sidecars restart all the time (no crashes), with final reports read late: whatever the
    departed did not use is handed out again, so once traffic stops and every sidecar has left,
    the controller's view of the window's use is exactly what was admitted, and all the rest
    of the limit is grantable to a newcomer."""
    rng = random.Random(5)
    fleet = _Fleet.of(20_000)
    for step in range(400):
        fleet.step(step, rng, crash=0.0, restart=0.1, read_for=(0, 3, 40))
    assert fleet.departures > 30
    window = fleet.quotas.window
    for holder in sorted(fleet.alive):
        fleet.leave(holder, window, 10**9)
    newcomer = SpendReport(scope="agent:a", holder="new.0", window=window, used=0)
    for step in range(400, 460):
        fleet.tick(step, window, [newcomer])
    view_now = view(fleet.budget, fleet.quotas, [newcomer], NOW)
    assert view_now.used() == fleet.admitted  # exact: no slice of a departed sidecar left over
    assert fleet.quotas.grants["new.0"] == fleet.limit - fleet.admitted
