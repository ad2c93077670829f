"""The rollout state machine and plan parsing: pure, no event loop."""

from __future__ import annotations

import pytest

from configsvc import errors
from configsvc.rollouts import plan as rollout_plan
from holdfast.keyspace import Route

AGENT = "support"


def base(**kw: object) -> Route:
    return Route(agent=AGENT, stable="r1", updated_at=1.0, **kw)  # type: ignore[arg-type]


def started(now: float = 100.0) -> Route:
    return rollout_plan.start(
        base(),
        agent=AGENT,
        release="r2",
        steps=(1.0, 5.0, 25.0, 100.0),
        interval_s=10.0,
        actor="ops",
        now=now,
    )


def test_parse_steps_and_interval() -> None:
    assert rollout_plan.parse_steps("1, 5,25,100") == (1.0, 5.0, 25.0, 100.0)
    assert rollout_plan.parse_steps("0.5,50") == (0.5, 50.0)
    for bad in ("", "1,,5", "5,1", "0,10", "10,101", "a,b", "1,1"):
        with pytest.raises(errors.InvalidRequest):
            rollout_plan.parse_steps(bad)
    assert rollout_plan.parse_interval("10m") == 600.0
    assert rollout_plan.parse_interval("1500ms") == 1.5
    assert rollout_plan.parse_interval("2h") == 7200.0
    assert rollout_plan.parse_interval("45") == 45.0
    for bad in ("", "10x", "-5s", "0.5s", "30d", "8d"):
        with pytest.raises(errors.InvalidRequest):
            rollout_plan.parse_interval(bad)


def test_start_sets_canary_to_the_first_step() -> None:
    route = started()
    assert route.canary == "r2" and route.canary_percent == 1.0
    assert route.rollout is not None and route.rollout.state == "running"
    assert route.rollout.step_started_at == 100.0 and route.updated_by == "ops"


def test_start_refusals() -> None:
    with pytest.raises(errors.AgentNotFound):
        rollout_plan.start(
            None, agent=AGENT, release="r2", steps=(50.0,), interval_s=5, actor="a", now=1
        )
    with pytest.raises(errors.InvalidRequest, match="already the stable"):
        rollout_plan.start(
            base(), agent=AGENT, release="r1", steps=(50.0,), interval_s=5, actor="a", now=1
        )
    with pytest.raises(errors.RolloutActive):
        rollout_plan.start(
            started(), agent=AGENT, release="r3", steps=(50.0,), interval_s=5, actor="a", now=1
        )
    manual = base(canary="r3", canary_percent=10.0)
    with pytest.raises(errors.Conflict, match="canary clear"):
        rollout_plan.start(
            manual, agent=AGENT, release="r2", steps=(50.0,), interval_s=5, actor="a", now=1
        )


def test_advance_walks_the_plan_then_promotes() -> None:
    route = started(now=100.0)
    assert rollout_plan.advance(route, agent=AGENT, now=109.9) is route  # not due: no write
    percents = []
    now = 100.0
    for _ in range(3):
        now += 10.0
        route = rollout_plan.advance(route, agent=AGENT, now=now)
        percents.append(route.canary_percent)
        # the same revision advanced twice by racing controllers: the second sees nothing due
        assert rollout_plan.advance(route, agent=AGENT, now=now) is route
    assert percents == [5.0, 25.0, 100.0]
    route = rollout_plan.advance(route, agent=AGENT, now=now + 10.0)
    assert route.stable == "r2" and route.previous_stable == "r1"
    assert route.canary == "" and route.canary_percent == 0.0
    assert route.rollout is not None and route.rollout.state == "done"
    assert route.rollout.reason == "completed"
    assert rollout_plan.advance(route, agent=AGENT, now=now + 100) is route


def test_pause_keeps_the_elapsed_time_and_resume_restores_it() -> None:
    route = started(now=100.0)
    paused = rollout_plan.pause(route, agent=AGENT, actor="ops", now=106.0)
    assert paused.rollout is not None and paused.rollout.elapsed == 6.0
    assert rollout_plan.pause(paused, agent=AGENT, actor="ops", now=107.0) is paused
    assert rollout_plan.advance(paused, agent=AGENT, now=1000.0) is paused  # the clock is stopped
    resumed = rollout_plan.resume(paused, agent=AGENT, actor="ops", now=500.0)
    assert resumed.rollout is not None and resumed.rollout.step_started_at == 494.0
    assert rollout_plan.advance(resumed, agent=AGENT, now=503.9) is resumed
    assert rollout_plan.advance(resumed, agent=AGENT, now=504.0).canary_percent == 5.0
    status = rollout_plan.status(paused, now=200.0)
    assert status["state"] == "paused" and status["remaining_s"] == 4.0


def test_promote_and_abort() -> None:
    promoted = rollout_plan.promote(started(), agent=AGENT, actor="ops", now=120.0)
    assert promoted.stable == "r2" and promoted.rollout is not None
    assert promoted.rollout.reason == "promoted"
    aborted = rollout_plan.abort(started(), agent=AGENT, actor="ops", now=120.0, reason="bad")
    assert aborted.stable == "r1" and aborted.canary == "r2" and aborted.canary_percent == 0.0
    assert aborted.rollout is not None and aborted.rollout.state == "aborted"
    assert aborted.rollout.reason == "bad"
    for done in (promoted, aborted, base()):
        for op in (rollout_plan.pause, rollout_plan.resume, rollout_plan.promote):
            with pytest.raises(errors.NoActiveRollout):
                op(done, agent=AGENT, actor="ops", now=130.0)
    # a finished rollout does not block the next one
    again = rollout_plan.start(
        aborted, agent=AGENT, release="r3", steps=(10.0,), interval_s=5, actor="a", now=1
    )
    assert again.canary == "r3"


def test_route_record_round_trips_with_a_rollout() -> None:
    route = started()
    assert Route.decode(route.encode()) == route
    status = rollout_plan.status(route, now=104.0)
    assert status["percent"] == 1.0 and status["remaining_s"] == 6.0
    assert status["next_step_at"] == 110.0 and status["final_step"] is False
