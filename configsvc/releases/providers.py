"""One route, one provider kind: a release placed beside releases of another kind is refused.

configsvc cannot know which API an agent speaks, but it knows that an agent speaks one: the
sidecar refuses a request whose release's provider does not speak the request's API (400
``dialect_not_served``), never translating. So a route whose stable is an ``openai`` release
and whose canary is an ``anthropic`` one fails every canary session of an OpenAI agent; a
stable swapped to another kind fails every new session, and a pin migrated to one fails the
migrated conversations. Those changes are refused (409 ``provider_mismatch``) unless the
operator says the agent speaks both APIs (``allow_provider_change``).

The check runs inside the route's compare-and-swap (``checker`` returns a function of the route
as it is then), against the agent's releases read once before (``ConfigService.release_map``):
releases are immutable and never deleted, so that read cannot go stale; a release the read did
not see is not judged. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from configsvc import errors
from holdfast.keyspace import Release, Route

FORCE_FIELD: Final = "allow_provider_change"
FORCE_OPTION: Final = "--allow-provider-change"


def serving(route: Route) -> dict[str, str]:
    """The releases a route sends requests to, by role."""
    roles = {"stable": route.stable, "canary": route.canary}
    if route.shadow is not None:
        roles["shadow"] = route.shadow.release
    if route.rollout is not None and route.rollout.active:
        roles["rollout"] = route.rollout.release
    return {role: name for role, name in roles.items() if name}


def mismatch(
    route: Route | None, placed: Release, role: str, releases: Mapping[str, Release]
) -> str:
    """Why ``placed`` as ``role`` would mix provider kinds on ``route``; '' when it does not.
    A role placed anew replaces its holder, so the holder is not compared -- except the stable
    one, whose pinned sessions stay on the old release and speak its API."""
    if route is None:
        return ""
    for other_role, name in serving(route).items():
        if other_role == role and role != "stable":
            continue
        other = releases.get(name)
        if other is None or other.name == placed.name or other.provider == placed.provider:
            continue
        return (
            f"release {placed.name!r} ({placed.provider}) would be {role} while {other_role} "
            f"release {other.name!r} is {other.provider}: an agent speaks one provider's API, "
            f"and the sidecar refuses requests its release's provider does not speak "
            f"(dialect_not_served). Nothing was changed; if this agent speaks both APIs, "
            f"repeat with {FORCE_OPTION}"
        )
    return ""


def checker(
    releases: Mapping[str, Release], placed: Release, role: str, *, allow: bool
) -> Callable[[Route | None], None]:
    """A check for ``update_route``'s edit: raises ProviderMismatch unless ``allow``."""

    def check(route: Route | None) -> None:
        problem = "" if allow else mismatch(route, placed, role, releases)
        if problem:
            raise errors.ProviderMismatch(problem, param="release")

    return check


def migration_mismatch(source: Release, target: Release) -> str:
    """Why migrating pins from ``source`` to ``target`` breaks them; '' when it does not."""
    if source.provider == target.provider:
        return ""
    return (
        f"sessions pinned to {source.name!r} ({source.provider}) speak its provider's API; "
        f"moved to {target.name!r} ({target.provider}) every turn of theirs would be refused "
        f"(dialect_not_served). Nothing was migrated; if these sessions speak both APIs, "
        f"repeat with {FORCE_OPTION}"
    )
