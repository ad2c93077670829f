"""Before a release serves an agent: can its provider take what the agent's traffic uses?

A request reaches a release whose provider speaks another API through a translation
(holdfast.translate) when the pair exists and the request uses nothing the pair refuses; the
sidecar refuses the others one by one (400 ``dialect_not_served`` or ``untranslatable``).
configsvc sees no request, but the agent's sidecars count the dialects and features of the
requests they serve in their health snapshots (``HealthSnapshot.traffic``). A change that would
have a release serve the agent while its provider kind cannot take what that traffic uses --
``release create``, ``route set-stable``, ``canary set``, ``switch``, ``shadow set``, ``rollout
start``, ``pins migrate`` -- is refused (409 ``provider_mismatch``) naming each reason, unless
the operator places it anyway (``allow_provider_change``). With no snapshot yet nothing is
known and nothing is refused: each request is then judged where it is served.

The traffic is read once before the change (``ConfigService.agent_traffic``); the check runs
inside the route's compare-and-swap with the rest of the edit. Pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from configsvc import errors
from holdfast.keyspace import Release, Route
from holdfast.translate import judge

FORCE_FIELD: Final = "allow_provider_change"
FORCE_OPTION: Final = "--allow-provider-change"


def mismatch(placed: Release, role: str, traffic: Mapping[str, int]) -> str:
    """Why ``placed`` as ``role`` would fail requests the agent sends; '' when it would not."""
    problems = judge(traffic, placed.provider)
    if not problems:
        return ""
    return (
        f"release {placed.name!r} ({placed.provider}) as {role} would fail requests this agent "
        f"sends: {'; '.join(problems)} (as its sidecars counted them). Nothing was changed; to "
        f"place it anyway, repeat with {FORCE_OPTION}"
    )


def checker(
    traffic: Mapping[str, int], placed: Release, role: str, *, allow: bool
) -> Callable[[Route | None], None]:
    """A check for ``update_route``'s edit: raises ProviderMismatch unless ``allow``."""
    problem = "" if allow else mismatch(placed, role, traffic)

    def check(route: Route | None) -> None:
        if problem:
            raise errors.ProviderMismatch(problem, param="release")

    return check


def migration_mismatch(source: Release, target: Release, traffic: Mapping[str, int]) -> str:
    """Why migrating pins from ``source`` to ``target`` would break them; '' when it would not.
    A target of the source's kind serves whatever the sessions sent there before."""
    if source.provider == target.provider:
        return ""
    problems = judge(traffic, target.provider)
    if not problems:
        return ""
    return (
        f"sessions pinned to {source.name!r} ({source.provider}) moved to {target.name!r} "
        f"({target.provider}) would have requests refused: {'; '.join(problems)}. Nothing was "
        f"migrated; to migrate them anyway, repeat with {FORCE_OPTION}"
    )
