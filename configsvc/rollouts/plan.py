"""Pure progressive-rollout logic: parse a plan, and every transition of its state machine.

Each transition takes the current route and returns the new one (the very same object when
there is nothing to do), so the service applies it with one compare-and-swap: two controllers
racing on the same step both compute from the same revision, and only one write can land.

    running --(interval elapsed)--> running, next step ... --(last step elapsed)--> done
    running <--pause/resume--> paused;  running|paused --promote--> done;  --abort--> aborted
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Final

from configsvc import errors
from configsvc.experiments import no_experiment
from holdfast.keyspace import RecordError, Rollout, Route
from holdfast.keyspace.policy import HealthPolicy
from holdfast.keyspace.route import (
    MAX_ROLLOUT_INTERVAL_S,
    MAX_ROLLOUT_STEPS,
    MIN_ROLLOUT_INTERVAL_S,
    RolloutState,
)

_DURATION_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
CONTROLLER: Final = "rollout-controller"


def parse_steps(text: str) -> tuple[float, ...]:
    """``"1,5,25,100"`` -> (1.0, 5.0, 25.0, 100.0); increasing percentages in (0, 100]."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or not all(parts):
        raise errors.InvalidRequest(
            f"steps {text!r:.80}: give comma-separated percentages, e.g. 1,5,25,100",
            param="steps",
        )
    if len(parts) > MAX_ROLLOUT_STEPS:
        raise errors.InvalidRequest(f"at most {MAX_ROLLOUT_STEPS} steps", param="steps")
    try:
        steps = tuple(float(p) for p in parts)
    except ValueError as exc:
        raise errors.InvalidRequest(f"steps {text!r:.80}: not all numbers", param="steps") from exc
    return check_steps(steps)


def check_steps(steps: tuple[float, ...]) -> tuple[float, ...]:
    previous = 0.0
    for step in steps:
        if not math.isfinite(step) or not 0 < step <= 100:
            raise errors.InvalidRequest(f"step {step:g} is outside (0, 100]", param="steps")
        if step <= previous:
            raise errors.InvalidRequest("steps must increase strictly", param="steps")
        previous = step
    return steps


def parse_interval(text: str) -> float:
    """``"10m"``, ``"30s"``, ``"1h"``, ``"1500ms"`` or plain seconds."""
    match = _DURATION_RE.fullmatch(text)
    if match is None:
        raise errors.InvalidRequest(
            f"interval {text!r:.40}: use e.g. 30s, 10m, 1h", param="interval"
        )
    return check_interval(float(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def check_interval(seconds: float) -> float:
    if not MIN_ROLLOUT_INTERVAL_S <= seconds <= MAX_ROLLOUT_INTERVAL_S:
        raise errors.InvalidRequest(
            f"interval must be between {MIN_ROLLOUT_INTERVAL_S:g}s and "
            f"{MAX_ROLLOUT_INTERVAL_S / 86400:g} days",
            param="interval",
        )
    return seconds


def _require_route(agent: str, current: Route | None) -> Route:
    if current is None:
        raise errors.AgentNotFound(
            f"agent {agent!r} has no route; set a stable release first with "
            "`holdfastctl route set-stable`"
        )
    return current


def _active(agent: str, current: Route | None) -> tuple[Route, Rollout]:
    route = _require_route(agent, current)
    if route.rollout is None or not route.rollout.active:
        raise errors.NoActiveRollout(f"agent {agent!r} has no rollout running or paused")
    return route, route.rollout


def start(
    current: Route | None,
    *,
    agent: str,
    release: str,
    steps: tuple[float, ...],
    interval_s: float,
    actor: str,
    now: float,
    policy: HealthPolicy | None = None,
) -> Route:
    route = _require_route(agent, current)
    if route.rollout is not None and route.rollout.active:
        raise errors.RolloutActive(
            f"agent {agent!r} already has a rollout of {route.rollout.release!r} "
            f"({route.rollout.state}); promote or abort it first"
        )
    if release == route.stable:
        raise errors.InvalidRequest(f"{release!r} is already the stable release", param="release")
    no_experiment(agent, route, "rollout start")
    if route.canary and route.canary != release and route.canary_percent > 0:
        raise errors.Conflict(
            f"canary {route.canary!r} takes {route.canary_percent:g}% of new sessions; "
            "clear it first (`holdfastctl canary clear`)"
        )
    try:
        rollout = Rollout(
            release=release,
            steps=steps,
            interval_s=interval_s,
            started_at=now,
            started_by=actor,
            step_started_at=now,
            policy=policy,
        )
    except RecordError as exc:
        raise errors.InvalidRequest(str(exc)) from exc
    return dataclasses.replace(
        route,
        canary=release,
        canary_percent=rollout.percent,
        rollout=rollout,
        updated_at=now,
        updated_by=actor,
    )


def due(rollout: Rollout, now: float) -> bool:
    return rollout.state == "running" and now - rollout.step_started_at >= rollout.interval_s


def advance(current: Route | None, *, agent: str, now: float) -> Route:
    """One step forward when the current one has lasted its interval; past the last, promote."""
    route = _require_route(agent, current)
    rollout = route.rollout
    if rollout is None or not due(rollout, now):
        return route
    if rollout.step + 1 >= len(rollout.steps):
        return _finish(route, rollout, state="done", reason="completed", actor=CONTROLLER, now=now)
    nxt = dataclasses.replace(rollout, step=rollout.step + 1, step_started_at=now)
    return dataclasses.replace(
        route, canary_percent=nxt.percent, rollout=nxt, updated_at=now, updated_by=CONTROLLER
    )


def pause(current: Route | None, *, agent: str, actor: str, now: float) -> Route:
    route, rollout = _active(agent, current)
    if rollout.state == "paused":
        return route
    paused = dataclasses.replace(rollout, state="paused", elapsed=now - rollout.step_started_at)
    return dataclasses.replace(route, rollout=paused, updated_at=now, updated_by=actor)


def resume(current: Route | None, *, agent: str, actor: str, now: float) -> Route:
    route, rollout = _active(agent, current)
    if rollout.state == "running":
        return route
    running = dataclasses.replace(
        rollout, state="running", step_started_at=now - rollout.elapsed, elapsed=0.0
    )
    return dataclasses.replace(route, rollout=running, updated_at=now, updated_by=actor)


def promote(current: Route | None, *, agent: str, actor: str, now: float) -> Route:
    route, rollout = _active(agent, current)
    return _finish(route, rollout, state="done", reason="promoted", actor=actor, now=now)


def abort(current: Route | None, *, agent: str, actor: str, now: float, reason: str) -> Route:
    """The canary drops to 0% at once; sessions already pinned to it stay until migrated."""
    route, rollout = _active(agent, current)
    ended = dataclasses.replace(
        rollout, state="aborted", ended_at=now, reason=reason or "aborted", elapsed=0.0
    )
    return dataclasses.replace(
        route, canary_percent=0.0, rollout=ended, updated_at=now, updated_by=actor
    )


def _finish(
    route: Route, rollout: Rollout, *, state: RolloutState, reason: str, actor: str, now: float
) -> Route:
    ended = dataclasses.replace(rollout, state=state, ended_at=now, reason=reason, elapsed=0.0)
    return dataclasses.replace(
        route,
        stable=rollout.release,
        previous_stable=route.stable,
        canary="",
        canary_percent=0.0,
        rollout=ended,
        updated_at=now,
        updated_by=actor,
    )


def status(route: Route, now: float) -> dict[str, Any]:
    """The rollout as the API shows it, with the derived timing an operator wants to see."""
    rollout = route.rollout
    if rollout is None:
        return {"state": "none"}
    body = rollout.to_map() | {"percent": rollout.percent}
    body |= {"next_step_at": None, "remaining_s": None}
    if rollout.state == "running":
        at = rollout.step_started_at + rollout.interval_s
        body |= {"next_step_at": at, "remaining_s": max(0.0, at - now)}
    elif rollout.state == "paused":
        body["remaining_s"] = max(0.0, rollout.interval_s - rollout.elapsed)
    body["final_step"] = rollout.step + 1 >= len(rollout.steps)
    return body
