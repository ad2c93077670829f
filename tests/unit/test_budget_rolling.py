"""Rolling windows: sub-bucket arithmetic, the no-boundary-burst guarantee, settlement into the
admission's bucket, epoch carry-over of fleet slices, and a randomized fleet simulation (crashes,
partitions, stale reports) checking every window-long interval against the limit."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from configsvc.budgets.quota_view import TAIL_EPOCHS, carry, view
from holdfast.budgets.rolling import Buckets
from holdfast.budgets.window import span_at
from holdfast.keyspace.budget import Budget
from holdfast.keyspace.quota import DEPARTED, Quotas, SpendReport
from sidecar.budgets.ledger import Ledger, Reservation

T0 = 1_000_020.0  # 20 s into an epoch-aligned minute


def _ledger(budget: Budget, now: float = T0) -> Ledger:
    ledger = Ledger()
    ledger.sync({budget.scope: budget}, now)
    return ledger


def test_no_burst_at_a_fixed_boundary() -> None:
    ledger = _ledger(Budget(scope="session:s", tokens=100, window="1m"))
    end_of_minute = (T0 // 60 + 1) * 60 - 0.1
    [m] = ledger.applicable(["session:s"], end_of_minute)
    burst, _ = ledger.admit([m], 100, end_of_minute)
    assert burst is not None
    Ledger.settle(burst, 100, estimated=False)
    [m] = ledger.applicable(["session:s"], end_of_minute + 0.2)  # a fixed window would reset
    res, refused = ledger.admit([m], 1, end_of_minute + 0.2)
    assert res is None
    assert 59 <= refused[0].retry_after <= 61  # when the bucket of the 100 tokens ages out
    later = end_of_minute + 0.2 + refused[0].retry_after
    [m] = ledger.applicable(["session:s"], later)
    assert m.used == 0 and ledger.admit([m], 100, later)[0] is not None


def test_spend_is_forgotten_between_one_window_and_one_bucket_more() -> None:
    b = Buckets.for_window(60)
    b.advance(T0)
    b.add(b.current, 10)
    assert b.advance(T0 + 59.999) == 10
    assert b.advance(T0 + 60) == 10  # T0 sits inside its 1 s bucket: kept a little longer
    assert b.advance(T0 + 61) == 0
    b.add(b.index(T0), 5)  # a late settlement of an aged-out bucket charges nothing
    assert b.total == 0 and b.freed_after(1, T0 + 61) is None


def test_settlement_charges_the_admission_bucket_and_retry_after_counts_buckets() -> None:
    ledger = _ledger(Budget(scope="session:s", tokens=100, window="1m"))
    [m] = ledger.applicable(["session:s"], T0)
    first, _ = ledger.admit([m], 60, T0)
    [m] = ledger.applicable(["session:s"], T0 + 30)
    second, _ = ledger.admit([m], 40, T0 + 30)
    assert first is not None and second is not None
    Ledger.settle(first, 50, estimated=False)  # settles 30 s later, still into T0's bucket
    Ledger.settle(second, 40, estimated=False)
    _, refused = ledger.admit([m], 20, T0 + 30)
    assert refused[0].retry_after == 31  # T0's bucket (50 tokens) leaves at T0 + 61
    _, refused = ledger.admit([m], 61, T0 + 30)
    assert refused[0].retry_after == 61  # needs both buckets gone


def test_interval_guarantee_randomized() -> None:
    """Any interval of one window length holds at most the limit, wherever it starts."""
    rng = random.Random(3)
    limit, width = 1000, 60.0
    ledger = _ledger(Budget(scope="session:s", tokens=limit, window="1m"))
    log: list[tuple[float, list[int]]] = []
    open_: list[tuple[Reservation, list[int]]] = []
    now = T0
    for _ in range(4000):
        now += rng.expovariate(8.0)
        [m] = ledger.applicable(["session:s"], now)
        amount = rng.randint(1, 120)
        res, _ = ledger.admit([m], amount, now)
        if res is not None:
            cell = [amount]
            log.append((now, cell))
            open_.append((res, cell))
        while open_ and (rng.random() < 0.6 or len(open_) > 20):
            res, cell = open_.pop(rng.randrange(len(open_)))
            cell[0] = rng.randint(0, res.amount)
            Ledger.settle(res, cell[0], estimated=False)
        inside = sum(c[0] for t, c in log if now - width <= t <= now)
        assert inside <= limit
    assert sum(c[0] for _, c in log) > 3 * limit  # and the window does roll


def test_epoch_turn_carries_claims_and_keeps_tails_of_departed_holders() -> None:
    budget = Budget(scope="agent:a", tokens=1000, window="1m")
    span = span_at("1m", "UTC", T0)
    q = Quotas(scope="agent:a", window=span.id, limit=1000, grants={"a": 400, "b": 300, "c": 5})
    reports = [
        SpendReport(scope="agent:a", holder="a", window=span.id, used=100, returned=150),
        SpendReport(scope="agent:a", holder="c", window="1m@1", used=0, returned=5),
    ]
    nxt = span_at("1m", "UTC", T0 + 60)
    grants, tails = carry(q, "1m", nxt, reports)
    epoch = int(span.start // 60)
    assert grants == {"a": 250, "c": 5}  # c's report is of another epoch: nothing returned
    assert tails == {"b": (300, epoch + TAIL_EPOCHS)}
    fleet = view(budget, q, reports, T0 + 60)
    assert fleet.used() == 100 + 0 + 300  # live use of a and c, the tail of b
    assert sum(fleet.plan(1000).values()) + fleet.tail_tokens <= 1000
    q2 = Quotas(scope="agent:a", window=nxt.id, limit=1000, grants=grants, tails=tails)
    assert Quotas.decode(q2.encode()) == q2
    later = span_at("1m", "UTC", T0 + 60 * (TAIL_EPOCHS + 1))
    assert carry(q2, "1m", later, reports)[1] == {}  # aged out: the claim is free again


def test_departed_holders_fold_then_age_out_as_a_tail_of_their_own() -> None:
    budget = Budget(scope="agent:a", tokens=1000, window="1m")
    span = span_at("1m", "UTC", T0)
    epoch = int(span.start // 60)
    q = Quotas(
        scope="agent:a",
        window=span.id,
        limit=1000,
        grants={"a.1": 400, "b.1": 300, "c.1": 200},
        reported={"c.1": (50, 120)},
    )
    reports = [
        # a leaves gracefully: 140 in its live window, the rest given back
        SpendReport(
            scope="agent:a", holder="a.1", window=span.id, used=140, returned=260, final=True
        ),
        SpendReport(scope="agent:a", holder="b.1", window=span.id, used=100),
        # c's report is gone (a crash): it counts its grant less what it was seen giving back
    ]
    fleet = view(budget, q, reports, T0)
    assert fleet.departed == 140 and fleet.holders["c.1"].claim == 80
    assert fleet.used() == 140 + 100 + 80
    grants = {k: v for k, v in fleet.plan(1000).items() if v > 0}
    q2 = Quotas(
        scope="agent:a",
        window=span.id,
        limit=1000,
        grants=grants,
        reported=fleet.reported(),
        tails=fleet.tails,
    )
    assert q2.grants[DEPARTED] == 140 and "a.1" not in q2.grants
    nxt = span_at("1m", "UTC", T0 + 60)
    carried, tails = carry(q2, "1m", nxt, reports[1:])
    assert tails == {f"{DEPARTED}@{epoch}": (140, epoch + TAIL_EPOCHS), "c.1": (80, epoch + 4)}
    assert "b.1" in carried and DEPARTED not in carried
    # a final report met only at the turn goes straight to a tail, at its use
    late = carry(q, "1m", nxt, reports)[1]
    assert late["a.1"] == (140, epoch + TAIL_EPOCHS)


def test_a_slice_is_usable_within_one_epoch_and_returned_restarts_with_each_epoch() -> None:
    ledger = _ledger(Budget(scope="agent:a", tokens=1000, window="1m"))
    [m] = ledger.applicable(["agent:a"], T0)
    ledger.set_grant("agent:a", m.tally.span.id, 300, 0)
    ledger.admit([m], 100, T0)
    assert m.give_back(50) == 150 and m.allowance == 150
    nxt = span_at("1m", "UTC", T0 + 60).id
    ledger.set_grant("agent:a", nxt, 150, 0)  # configsvc carried the claim
    assert m.returned == 0 and m.allowance == 150
    [m] = ledger.applicable(["agent:a"], T0 + 120)  # clock one epoch past the grant: usable
    assert m.allowance == 150
    [m] = ledger.applicable(["agent:a"], T0 + 180)
    assert m.allowance == 0  # two epochs past: the slice has expired


@dataclass
class _Node:
    ledger: Ledger
    quotas: Quotas | None = None  # the last slices it saw
    cut_until: int = -1  # partitioned from etcd (no reports, no slices) until this step
    open: list[tuple[Reservation, list[int]]] = field(default_factory=list)


def test_rolling_fleet_never_admits_beyond_the_limit_in_any_window() -> None:
    """Five sidecars on a rolling 1m budget over 25 epochs: random traffic and settlements,
    give-backs, crashes, graceful restarts with final reports (read at once, late or never),
    partitions during which a sidecar keeps admitting from the slice it holds, reports up to
    three ticks stale. Every step checks the last window's admissions
    (charges once settled, reservations until then) of the whole fleet, dead or cut off."""
    rng = random.Random(11)
    limit, width = 20_000, 60.0
    budget = Budget(scope="agent:a", tokens=limit, window="1m")
    quotas = Quotas(scope="agent:a", window="", limit=limit)
    nodes: dict[str, _Node] = {}
    log: deque[tuple[float, list[int]]] = deque()
    history: list[list[SpendReport]] = []
    finals: dict[str, tuple[SpendReport, int]] = {}  # holder -> (final report, last step read)
    serial, total, departures = 0, 0, 0
    for step in range(1500):
        now = T0 + step
        while sum(1 for n in nodes.values() if n.cut_until < step) < 5:
            serial += 1
            nodes[f"s{serial}"] = _Node(_ledger(budget, now))
        reports = []
        for name, node in nodes.items():
            connected = node.cut_until < step
            if connected:
                node.quotas = quotas
            q = node.quotas
            [m] = node.ledger.applicable(["agent:a"], now)
            if q is not None:
                node.ledger.set_grant("agent:a", q.window, q.grants.get(name, 0), q.used)
            for _ in range(rng.randint(0, 3)):
                res, _ = node.ledger.admit([m], rng.randint(1, 500), now)
                if res is not None:
                    cell = [res.amount]
                    log.append((now, cell))
                    node.open.append((res, cell))
            while node.open and rng.random() < 0.7:  # streams end a few steps later
                res, cell = node.open.pop(0)
                cell[0] = rng.randint(0, res.amount)
                Ledger.settle(res, cell[0], estimated=False)
            if rng.random() < 0.05:
                m.give_back(rng.randint(0, 300))
            if connected:
                window = m.grant_window or m.tally.span.id
                reports.append(
                    SpendReport(
                        scope="agent:a",
                        holder=name,
                        window=window,
                        used=m.used,
                        returned=m.returned,
                        want=m.tally.want,
                    )
                )
                m.tally.want = 0
        history.append(reports)
        roll = rng.random()
        if roll < 0.004:  # a crash: whatever it admitted stays in the log
            nodes.pop(rng.choice(sorted(nodes)))
        elif roll < 0.01:
            rng.choice(list(nodes.values())).cut_until = step + rng.randint(20, 200)
        elif roll < 0.025:  # a graceful restart: all unused given back, a final report
            name = rng.choice(sorted(n for n, node in nodes.items() if node.cut_until < step))
            [m] = nodes.pop(name).ledger.applicable(["agent:a"], now)
            m.give_back(0)
            final = SpendReport(
                scope="agent:a",
                holder=name,
                window=m.grant_window or m.tally.span.id,
                used=m.used,
                returned=m.returned,
                final=True,
            )
            finals[name] = (final, step + rng.choice((-1, 0, 5, 90)))  # -1: never read
            departures += 1
        seen = [r for r in history[-rng.randint(1, min(4, len(history)))] if r.holder in nodes]
        seen += [r for r, last in finals.values() if last >= step]
        fleet = view(budget, quotas, seen, now)
        grants = {k: v for k, v in fleet.plan(limit).items() if v > 0}
        quotas = Quotas(
            scope="agent:a",
            window=fleet.span.id,
            limit=limit,
            grants=grants,
            used=fleet.used(),
            tails=fleet.tails,
            reported=fleet.reported(),
        )
        while log and log[0][0] < now - width:
            total += log.popleft()[1][0]
        inside = sum(c[0] for _, c in log)
        assert inside <= limit, f"step {step}: {inside} > {limit}"
    total += sum(c[0] for _, c in log)
    assert departures > 3
    assert total > 12 * limit  # the budget rolls: far more than one limit over 25 windows
