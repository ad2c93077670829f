"""The ``contracts`` part of the sidecar's ``/status``: what an on-call person asks first.

Per release that pins contracts (stable, canary and shadow first; older releases too, since
pinned sessions may still use them): each tool's pinned version, whether this sidecar holds
that version (and compiled it), the policy in force and the backend. Then the circuit breakers
(per backend URL, and per contract version for results that break it), and the cumulative
counters per release and tool.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from holdfast.keyspace import Route
from sidecar.config import ConfigState
from sidecar.contracts.book import ContractBook
from sidecar.contracts.breakers import ToolBreakers
from sidecar.contracts.stats import ContractStats


def role_of(route: Route | None, release: str) -> str:
    if route is None:
        return "other"
    if release == route.stable:
        return "stable"
    if release == route.canary and route.canary_percent > 0:
        return "canary"
    if route.shadow is not None and release == route.shadow.release:
        return "shadow"
    return "other"


def contract_status(
    config: ConfigState,
    book: ContractBook,
    stats: ContractStats,
    breakers: ToolBreakers,
    clock: Callable[[], float],
) -> dict[str, Any]:
    snapshot = config.current
    route = snapshot.route if snapshot else None
    releases: dict[str, dict[str, Any]] = {}
    unavailable: list[str] = []
    ranked = sorted(
        (snapshot.releases.values() if snapshot else ()),
        key=lambda r: (("stable", "canary", "shadow", "other").index(role_of(route, r.name)),
                       r.name),
    )  # fmt: skip
    for release in ranked:
        if not release.contracts:
            continue
        tools: dict[str, Any] = {}
        for tool, pinned in sorted(book.pinned(snapshot, release).items()):
            compiled = pinned.compiled
            tools[tool] = {
                "version": pinned.version,
                "held": compiled is not None,
                "policy": pinned.policy,
                "backend": compiled.contract.backend or None if compiled else None,
            }
            if compiled is None:
                unavailable.append(f"{release.name}:{pinned.ref}")
        releases[release.name] = {"role": role_of(route, release.name), "tools": tools}
    backends, contracts = breakers.view(clock())
    return {
        "releases": releases,
        "unavailable": unavailable,
        "uncompilable": [f"{tool}@{version}" for tool, version, _ in book.uncompilable],
        "breakers": backends,
        "result_breakers": contracts,
        "stats": stats.stats(),
    }
