"""Pure route edits of canary, blue-green switch and shadow.

Each takes the route as it is NOW (the service calls it inside its compare-and-swap loop, with
the freshly read record), so a check such as "no rollout is active" is made against the route
that the write will replace, never against an earlier read. The very same object back means
"nothing to change".
"""

from __future__ import annotations

import dataclasses

from configsvc import errors
from configsvc.experiments import no_experiment
from configsvc.releases import require
from holdfast.keyspace import Route, Shadow


def _no_rollout(agent: str, route: Route, what: str) -> None:
    rollout = route.rollout
    if rollout is not None and rollout.active:
        raise errors.RolloutActive(
            f"agent {agent!r} has a rollout of {rollout.release!r} ({rollout.state}) that owns "
            f"its traffic split; {what} refused: abort or finish it first "
            "(`holdfastctl rollout abort|promote`)"
        )


def with_canary(
    current: Route | None, *, agent: str, release: str, percent: float, actor: str, now: float
) -> Route:
    route = require(agent, current)
    _no_rollout(agent, route, "canary set")
    no_experiment(agent, route, "canary set")
    if release == route.stable:
        raise errors.InvalidRequest(
            f"{release!r} is the stable release already; a canary must be another release",
            param="release",
        )
    if route.canary == release and route.canary_percent == percent:
        return route
    return dataclasses.replace(
        route, canary=release, canary_percent=percent, updated_at=now, updated_by=actor
    )


def without_canary(current: Route | None, *, agent: str, actor: str, now: float) -> Route:
    route = require(agent, current)
    _no_rollout(agent, route, "canary clear")
    if not route.canary and not route.canary_percent:
        return route
    return dataclasses.replace(
        route, canary="", canary_percent=0.0, updated_at=now, updated_by=actor
    )


def switched(current: Route | None, *, agent: str, release: str, actor: str, now: float) -> Route:
    """Blue-green: every new session goes to ``release`` at once; the old stable is kept as the
    way back. The canary ends (its split was against the old stable) and a shadow of the new
    stable would mirror it onto itself, so it ends too."""
    route = require(agent, current)
    _no_rollout(agent, route, "switch")
    no_experiment(agent, route, "switch")
    if release == route.stable:
        raise errors.InvalidRequest(f"{release!r} is the stable release already", param="release")
    shadow = None if route.shadow is not None and route.shadow.release == release else route.shadow
    return dataclasses.replace(
        route,
        stable=release,
        previous_stable=route.stable,
        canary="",
        canary_percent=0.0,
        shadow=shadow,
        updated_at=now,
        updated_by=actor,
    )


def switched_back(current: Route | None, *, agent: str, actor: str, now: float) -> Route:
    route = require(agent, current)
    if not route.previous_stable:
        raise errors.NoPreviousRelease(
            f"route of {agent!r} has no previous stable release to switch back to"
        )
    return switched(route, agent=agent, release=route.previous_stable, actor=actor, now=now)


def with_shadow(current: Route | None, *, agent: str, shadow: Shadow, actor: str) -> Route:
    """A new shadow always starts a new epoch (``shadow.since``), even for the same release:
    the thresholds or the share may differ, and a report must not mix the two."""
    route = require(agent, current)
    if shadow.release == route.stable:
        raise errors.InvalidRequest(
            f"{shadow.release!r} is the stable release; shadowing it onto itself compares nothing",
            param="release",
        )
    return dataclasses.replace(route, shadow=shadow, updated_at=shadow.since, updated_by=actor)


def without_shadow(current: Route | None, *, agent: str, actor: str, now: float) -> Route:
    route = require(agent, current)
    if route.shadow is None:
        return route
    return dataclasses.replace(route, shadow=None, updated_at=now, updated_by=actor)
