"""The sidecar's ledger (atomic check-and-reserve, settle, windows) and the fleet slicing plan,
including a randomized proof of the overspend bound with crashes and stale reports."""

from __future__ import annotations

import random

from configsvc.budget_controller import holders_of
from configsvc.quota_plan import Holder, plan
from holdfast.keyspace.budget import Budget, Quotas, SpendReport
from sidecar.budget_ledger import Ledger

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


def test_fleet_never_admits_beyond_the_limit_with_crashes_and_stale_reports() -> None:
    """The bound: with reservations that cover the worst case, over-admission is 0 tokens.

    Five sidecars, a controller planning from reports that may be several ticks old, random
    give-backs, random crashes (a crashed sidecar's reservations and slice stay counted: it
    may have spent them) and restarts under a new holder id."""
    rng = random.Random(7)
    limit = 20_000
    budget = Budget(scope="agent:a", tokens=limit, window="1d")
    quotas = Quotas(scope="agent:a", window="", limit=limit)
    alive: dict[str, Ledger] = {}
    dead_used = 0
    history: list[list[SpendReport]] = []
    serial = 0
    for step in range(3000):
        while len(alive) < 5:
            serial += 1
            alive[f"s{serial}"] = ledger_with(budget)
        window = next(iter(alive.values())).meters["agent:a"].tally.span.id
        for holder, ledger in alive.items():  # sidecars follow their slices
            ledger.set_grant("agent:a", quotas.window, quotas.grants.get(holder, 0), quotas.used)
        for ledger in alive.values():  # traffic
            meter = ledger.meters["agent:a"]
            res, _ = ledger.admit([meter], rng.randint(1, 400), NOW)
            if res is not None and rng.random() < 0.7:
                Ledger.settle(res, rng.randint(0, res.amount), estimated=False)
            if rng.random() < 0.05:
                meter.give_back(rng.randint(0, 200))
        reports = [
            SpendReport(
                scope="agent:a",
                holder=h,
                window=window,
                used=m.used,
                returned=m.returned,
                want=m.tally.want,
            )
            for h, led in alive.items()
            for m in [led.meters["agent:a"]]
        ]
        history.append(reports)
        if rng.random() < 0.02:  # a crash: everything it reserved or spent stays spent
            victim = rng.choice(sorted(alive))
            dead_used += alive.pop(victim).meters["agent:a"].used
        seen = history[-rng.randint(1, min(4, len(history)))]  # stale by up to 3 ticks
        seen = [r for r in seen if r.holder in alive]
        holders = holders_of(quotas, window, seen)
        grants = plan(limit, holders)
        assert all(grants[h] >= quotas.grants.get(h, 0) for h in grants)  # grants never shrink
        quotas = Quotas(scope="agent:a", window=window, limit=limit, grants=grants)
        admitted = dead_used + sum(led.meters["agent:a"].used for led in alive.values())
        assert admitted <= limit, f"step {step}: {admitted} > {limit}"
    assert admitted > limit * 0.9  # and the budget does get used
