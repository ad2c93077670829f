"""Pure route edits: given the current route (None: none yet), the route an operation wants.

Returning the very same object means "nothing to change", and the service then writes nothing.
"""

from __future__ import annotations

import dataclasses

from configsvc import errors
from holdfast.keyspace import Route


def require(agent: str, current: Route | None) -> Route:
    if current is None:
        raise errors.AgentNotFound(
            f"agent {agent!r} has no route; set one with `holdfastctl route set-stable`"
        )
    return current


def with_stable(
    current: Route | None, *, agent: str, release: str, actor: str, now: float
) -> Route:
    """``release`` becomes stable; the old stable becomes the rollback target."""
    if current is None:
        return Route(agent=agent, stable=release, updated_at=now, updated_by=actor)
    if current.stable == release:
        return current
    return dataclasses.replace(
        current, stable=release, previous_stable=current.stable, updated_at=now, updated_by=actor
    )


def rolled_back(current: Route | None, *, agent: str, actor: str, now: float) -> Route:
    """Stable and previous stable swap places, so a second rollback undoes the first."""
    current = require(agent, current)
    if not current.previous_stable:
        raise errors.NoPreviousRelease(
            f"route of {agent!r} has no previous stable release to roll back to"
        )
    return dataclasses.replace(
        current,
        stable=current.previous_stable,
        previous_stable=current.stable,
        updated_at=now,
        updated_by=actor,
    )


def with_aliases(
    current: Route | None, *, agent: str, aliases: tuple[str, ...], actor: str, now: float
) -> Route:
    current = require(agent, current)
    if current.aliases == aliases:
        return current
    return dataclasses.replace(current, aliases=aliases, updated_at=now, updated_by=actor)
