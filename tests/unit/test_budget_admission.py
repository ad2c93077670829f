"""The admission decision (fits now / can fit by waiting / spent, and a cap lowered to fit), the
queue that waits on it, and slices that follow demand -- pure, no event loop, no etcd."""

from __future__ import annotations

import random

import pytest

from configsvc.budgets.quota_plan import Holder, plan
from holdfast.keyspace.budget import Budget
from holdfast.keyspace.price import Price
from holdfast.keyspace.quota import Quotas, SpendReport
from sidecar.budgets.admission import Admit, Need, Refuse, Wait, decide, largest_cap
from sidecar.budgets.ledger import Ledger, Reservation
from sidecar.budgets.meter import Meter

NOW = 1_000_000.0


def meters(*budgets: Budget, grant: int = 0, floor: int = 0) -> tuple[Ledger, list[Meter]]:
    ledger = Ledger()
    ledger.sync({b.scope: b for b in budgets}, NOW)
    found = ledger.applicable([b.scope for b in budgets], NOW)
    for m in found:
        if m.budget.fleet:
            ledger.set_grant(m.id, m.tally.span.id, grant, floor, floor)
    return ledger, found


def reserve(ledger: Ledger, ms: list[Meter], need: Need) -> Reservation:
    reservation, _ = ledger.admit(ms, need.tokens, NOW, micros=need.micros)
    assert reservation is not None
    return reservation


def test_a_session_request_waits_for_reservations_in_flight_and_is_refused_once_spent() -> None:
    ledger, ms = meters(Budget(scope="session:s", tokens=420, window="day"))
    need = Need(prompt=16, per_choice=100)  # worst case 116, really ~21
    held = [reserve(ledger, ms, need) for _ in range(3)]  # 348 reserved
    assert isinstance(decide(ms, need, slices_live=True), Wait)  # 348 + 116 > 420, spent 0
    for r in held:
        Ledger.settle(r, 21, estimated=False)  # settled far below the worst case
    assert isinstance(decide(ms, need, slices_live=True), Admit)
    ms[0].tally.charge(0, 420 - 63 - 63)  # as if much more had been spent
    refused = decide(ms, need, slices_live=True)  # 357 spent: 116 can never fit
    assert isinstance(refused, Refuse) and refused.meter is ms[0] and refused.need == 116


def test_a_fleet_request_waits_for_a_slice_only_while_slices_can_move() -> None:
    budget = Budget(scope="agent:a", tokens=1000, window="day")
    ledger, ms = meters(budget, grant=100, floor=300)
    need = Need(prompt=16, per_choice=100)
    assert isinstance(decide(ms, need, slices_live=True), Wait)  # the fleet has room
    # etcd or configsvc away: nothing will grow this slice, and nothing is in flight here
    refused = decide(ms, need, slices_live=False)
    assert isinstance(refused, Refuse)
    # with its own reservation in flight, the slice itself may make room again
    ledger.set_grant("agent:a", ms[0].tally.span.id, 200, 300, 300)
    r = reserve(ledger, ms, Need(prompt=20, per_choice=80))
    assert isinstance(decide(ms, need, slices_live=False), Wait)
    Ledger.settle(r, 10, estimated=False)
    assert isinstance(decide(ms, need, slices_live=False), Admit)
    # the fleet's settled spend leaves no room for it: spent, whoever holds what
    ledger.set_grant("agent:a", ms[0].tally.span.id, 200, 950, 950)
    assert isinstance(decide(ms, Need(prompt=16, per_choice=200), slices_live=True), Refuse)


def test_a_floor_of_another_window_is_not_read_as_spent() -> None:
    ledger, ms = meters(Budget(scope="global", tokens=1000, window="day"))
    ledger.set_grant("global", "day@yesterday", 500, 990, 990)
    assert ms[0].fleet_floor == 0 and ms[0].allowance == 0
    assert isinstance(decide(ms, Need(prompt=10, per_choice=100), slices_live=True), Wait)


def test_fit_cap_admits_what_is_left_and_refuses_below_it() -> None:
    budget = Budget(scope="session:s", tokens=420, window="day", fit_cap=16)
    ledger, ms = meters(budget)
    ms[0].tally.charge(0, 420 - 50)
    need = Need(prompt=16, per_choice=100, choices=1)
    fitted = decide(ms, need, slices_live=True)
    assert isinstance(fitted, Admit) and fitted.need.fitted and fitted.need.write
    assert fitted.need.per_choice == 34 and fitted.need.tokens == 50  # all that is left
    held = reserve(ledger, ms, fitted.need)
    assert isinstance(decide(ms, need, slices_live=True), Wait)  # may settle low: wait
    Ledger.settle(held, 50, estimated=False)
    assert isinstance(decide(ms, need, slices_live=True), Refuse)  # 0 left: spent
    # without fit_cap the same request is refused as soon as its worst case cannot fit
    _, plain = meters(Budget(scope="session:s", tokens=420, window="day"))
    plain[0].tally.charge(0, 420 - 50)
    assert isinstance(decide(plain, need, slices_live=True), Refuse)


def test_fit_cap_counts_choices_and_never_raises_a_cap() -> None:
    budget = Budget(scope="session:s", tokens=1000, window="day", fit_cap=10)
    _, ms = meters(budget)
    ms[0].tally.charge(0, 1000 - 100)
    fitted = decide(ms, Need(prompt=20, per_choice=60, choices=3), slices_live=True)
    assert isinstance(fitted, Admit) and fitted.need.per_choice == 26  # 20 + 3 x 26 <= 100
    assert fitted.need.tokens <= 100
    small = decide(ms, Need(prompt=20, per_choice=8, choices=1), slices_live=True)
    assert isinstance(small, Admit) and not small.need.fitted  # it fits as it is
    # a session budget that does not fit caps binds: no fitting, even if the agent's allows it
    _, both = meters(
        Budget(scope="session:s", tokens=100, window="day"),
        Budget(scope="agent:a", tokens=10**6, window="day", fit_cap=10),
        grant=10**6,
    )
    both[0].tally.charge(0, 50)
    assert isinstance(decide(both, Need(prompt=20, per_choice=60), slices_live=True), Refuse)


def test_a_cost_meter_bounds_the_fitted_cap_too() -> None:
    price = Price(1_000_000, 4_000_000)  # micro-USD per 1M tokens: 1 and 4 micro-USD a token
    budget = Budget(scope="session:s", tokens=10**6, cost=1000, window="day", fit_cap=5)
    _, ms = meters(budget)
    [cost] = [m for m in ms if m.cost]
    cost.tally.charge(0, 1000 - 300)  # 300 micro-USD left
    need = Need(prompt=100, per_choice=200, price=price)
    fitted = decide(ms, need, slices_live=True)
    assert isinstance(fitted, Admit) and fitted.need.per_choice == 50  # 100 + 4 x 50 = 300
    assert largest_cap(ms, need, low=51) is None


def test_randomized_decisions_never_admit_beyond_a_limit_and_refuse_only_when_spent() -> None:
    """Random needs, settlements and fit caps on a session and a fleet meter: an admission
    (reserved whole) never takes a meter past its allowance, and a refusal only comes when the
    settled spend leaves no room for the smallest admissible form of the request."""
    rng = random.Random(11)
    for _ in range(200):
        fit = rng.choice([0, 0, 8, 32])
        ledger, ms = meters(
            Budget(scope="session:s", tokens=rng.randint(200, 2000), window="day", fit_cap=fit),
            Budget(scope="agent:a", tokens=rng.randint(500, 5000), window="day", fit_cap=fit),
            grant=rng.randint(0, 3000),
            floor=rng.randint(0, 400),
        )
        live: list[Reservation] = []
        for _ in range(60):
            need = Need(prompt=rng.randint(1, 60), per_choice=rng.randint(1, 200))
            live_slices = rng.random() < 0.8
            d = decide(ms, need, slices_live=live_slices)
            if isinstance(d, Admit):
                live.append(reserve(ledger, ms, d.need))
                assert d.need.tokens <= need.tokens
                assert all(m.used <= m.allowance for m in ms)
            elif isinstance(d, Refuse):  # the refusing meter cannot take even the smallest form
                m = d.meter
                low = min(fit, need.per_choice or 0) if fit else need.per_choice
                smallest = Need(need.prompt, low).tokens
                if m.budget.fleet:
                    assert smallest > m.allowance - m.tally.spent
                    assert not live_slices or m.fleet_floor + smallest > m.limit
                else:
                    assert m.tally.spent + smallest > m.limit
            if live and rng.random() < 0.5:
                r = live.pop(rng.randrange(len(live)))
                Ledger.settle(r, rng.randint(0, r.amount), estimated=False)


def test_plan_follows_demand_and_never_over_claims() -> None:
    holders = {
        "busy": Holder(grant=200, used=200, live=True, want=116, queued=580),
        "idle": Holder(grant=200, used=20, returned=150, live=True),
        "gone": Holder(grant=100, used=100),
    }
    grants = plan(1000, holders)
    # only the holder whose requests wait grows, toward what they need, within the free part
    assert grants["idle"] == 200 and grants["gone"] == 100
    free = 1000 - (200 + 50 + 100)
    assert grants["busy"] == 200 + min(free, 580)
    assert sum(max(0, g - holders[n].returned) for n, g in grants.items()) <= 1000
    # two holders waiting, 100 free: only b can serve its head with it (40 + 100 >= 116); a
    # scrap that would leave a short is not handed to it
    two = {
        "a": Holder(grant=300, used=300, live=True, want=116, queued=116),
        "b": Holder(grant=300, used=260, live=True, want=116, queued=232),
    }
    g = plan(700, two)
    assert g["a"] == 300 and g["b"] == 400
    assert sum(g.values()) <= 700
    g = plan(800, two)  # 200 free: b (shortfall 76) first, the rest is not enough for a
    assert g["b"] == 300 + 192 and g["a"] == 300


def test_queue_fields_round_trip_and_old_records_read_defaults() -> None:
    b = Budget(scope="agent:x", tokens=100, window="day", queue_timeout=2.5, fit_cap=16)
    assert Budget.decode(b.encode()) == b
    old = Budget(scope="agent:x", tokens=100, window="day").public()
    del old["queue_timeout"], old["fit_cap"]
    from holdfast.keyspace.codec import encode_record

    assert Budget.decode(encode_record("budget", old)).queue_timeout == 10.0
    for bad in ({"queue_timeout": -1.0}, {"queue_timeout": 301.0}, {"fit_cap": -2}):
        with pytest.raises(ValueError):
            Budget(scope="agent:x", tokens=100, window="day", **bad)
    q = Quotas(scope="agent:x", window="w", limit=10, used=7, reserved=3, demand={"h.1": 5})
    assert Quotas.decode(q.encode()) == q and q.settled_floor == 4
    r = SpendReport(scope="agent:x", holder="h.1", window="w", used=3, queued=9, waiting=2, waits=4)
    assert SpendReport.decode(r.encode()) == r


async def test_the_queue_is_bounded_fifo_per_scope_set_and_releases_what_nobody_took() -> None:
    import asyncio

    from sidecar.budgets.queue import AdmissionQueue, Granted, Waiter

    ledger, ms = meters(Budget(scope="session:s", tokens=300, window="day"))
    queue = AdmissionQueue(ledger, max_waiting=3, max_bytes=1000)
    loop = asyncio.get_running_loop()
    need = Need(prompt=20, per_choice=100)  # 120 each: two fit the limit at once

    def waiter(size: int = 100) -> Waiter:
        return Waiter(("session:s",), size, lambda: (ms, need), loop.create_future())

    held = reserve(ledger, ms, Need(prompt=100, per_choice=100))  # 200 in flight: 100 left
    first, second, third = waiter(), waiter(), waiter()
    assert queue.join(first) and queue.join(second)
    assert not queue.join(waiter(size=900))  # the bytes bound
    assert queue.join(third) and not queue.join(waiter())  # the count bound
    queue.pump()
    assert not first.future.done() and queue.busy(("session:s",))
    Ledger.settle(held, 60, estimated=False)  # 240 left: room for two, in order
    queue.pump()
    assert isinstance(first.future.result(), Granted) and isinstance(
        second.future.result(), Granted
    )
    assert queue.waiting == 1 and ms[0].tally.reserved == 240
    # a request granted a reservation that it never took (its agent left) gives it back, and
    # the room goes to the next in line
    queue.leave(second)
    assert isinstance(third.future.result(), Granted) and queue.waiting == 0
    assert ms[0].tally.reserved == 240 and ms[0].tally.admitted == 3  # held, first, third
