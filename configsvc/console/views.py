"""What each page shows, as plain data for its template, from what the console holds in memory
(the route watch, the last sample, the fleet's sidecar list) and, for the pages of one concern,
from that concern's operations. Nothing here renders HTML; the figures are formatted by the
templates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from configsvc.console.history import SERIES, History
from configsvc.console.sampler import AgentSample, in_route
from configsvc.health import SidecarBeat
from configsvc.rollouts import CONTROLLER, WatchedRoute, rollout_status
from holdfast.keyspace import Route

PAGE_SIZE: Final = 50
QUIET_AFTER_S: Final = 15.0  # a sidecar not heard from for this long is flagged (beats are ~2 s)
ROLE_ORDER: Final = {"stable": 0, "canary": 1, "shadow": 2, "other": 3}


def roles(route: Route | None) -> dict[str, str]:
    """release -> its role in the route (stable, canary, shadow)."""
    if route is None:
        return {}
    out = {route.stable: "stable"}
    if route.canary and route.canary_percent > 0:
        out.setdefault(route.canary, "canary")
    if route.shadow is not None and route.shadow.percent > 0:
        out.setdefault(route.shadow.release, "shadow")
    return out


def rollout_view(route: Route, now: float) -> dict[str, Any] | None:
    """The plan, where it is, and who set it going or stopped it."""
    rollout = route.rollout
    if rollout is None:
        return None
    status = rollout_status(route, now)
    total = len(rollout.steps)
    finished = rollout.state == "done"
    return {
        **status,
        "steps": list(rollout.steps),
        "step_number": rollout.step + 1,
        "step_count": total,
        "progress": 100.0 if finished else rollout.percent,
        "active": rollout.active,
        "by_gate": rollout.state in ("aborted", "paused") and route.updated_by == CONTROLLER,
        "has_policy": rollout.policy is not None,
    }


@dataclass(frozen=True, slots=True)
class Fleet:
    """An agent's sidecars at a glance: how many, how many lag the route or went quiet."""

    total: int
    behind: int  # applied a config revision older than the route's last change
    quiet: int  # no snapshot for QUIET_AFTER_S
    revision_min: int | None
    revision_max: int | None
    pins_cached: int
    pins_pending: int


def behind(beat: SidecarBeat, route: WatchedRoute | None) -> bool:
    return route is not None and beat.config_revision < route.mod_revision


def fleet_of(beats: Sequence[SidecarBeat], route: WatchedRoute | None, now: float) -> Fleet:
    revisions = [b.config_revision for b in beats]
    return Fleet(
        total=len(beats),
        behind=sum(1 for b in beats if behind(b, route)),
        quiet=sum(1 for b in beats if now - b.at > QUIET_AFTER_S),
        revision_min=min(revisions) if revisions else None,
        revision_max=max(revisions) if revisions else None,
        pins_cached=sum(b.pins_cached for b in beats),
        pins_pending=sum(b.pins_pending for b in beats),
    )


def sidecar_rows(
    beats: Sequence[SidecarBeat], route: WatchedRoute | None, now: float, page: int
) -> tuple[list[dict[str, Any]], int]:
    """One page of an agent's sidecars, the most troubled first; and how many pages."""
    ordered = sorted(beats, key=lambda b: (not behind(b, route), b.at, b.sidecar_id))
    pages = max(1, math.ceil(len(ordered) / PAGE_SIZE))
    rows = [
        {
            "id": b.sidecar_id,
            "age_s": max(0.0, now - b.at),
            "quiet": now - b.at > QUIET_AFTER_S,
            "started_at": b.started_at,
            "config_revision": b.config_revision,
            "behind": behind(b, route),
            "pins_cached": b.pins_cached,
            "pins_pending": b.pins_pending,
        }
        for b in ordered[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    ]
    return rows, pages


def release_columns(
    agent: str, route: Route | None, sample: AgentSample | None, history: History
) -> list[dict[str, Any]]:
    """Each release worth a column -- the route's, then any other that served lately -- with
    its newest figures and each series for the charts."""
    role_of = roles(route)
    names = set(in_route(route)) if route is not None else set()
    names |= {r for r, f in (sample.releases.items() if sample else ()) if f.get("requests")}
    names |= {r for r in history.releases(agent) if any(history.series(agent, r, "requests"))}
    ordered = sorted(names, key=lambda r: (ROLE_ORDER[role_of.get(r, "other")], r))
    columns = []
    for release in ordered:
        latest: Mapping[str, float | None] = (sample.releases.get(release) or {}) if sample else {}
        columns.append(
            {
                "release": release,
                "role": role_of.get(release, "other"),
                "latest": dict(latest),
                "series": {name: history.series(agent, release, name) for name in SERIES},
            }
        )
    return columns


def shown_series(columns: Sequence[Mapping[str, Any]]) -> list[str]:
    """The series some release has a figure of (no empty row for, say, a route without a
    shadow or a release that never streamed)."""
    return [
        name
        for name in SERIES
        if any(v is not None for c in columns for v in (*c["series"][name], c["latest"].get(name)))
    ]


def agent_row(
    agent: str,
    watched: WatchedRoute | None,
    sample: AgentSample | None,
    beats: Sequence[SidecarBeat],
    now: float,
) -> dict[str, Any]:
    """One agent on the overview."""
    route = watched.route if watched else None
    role_of = roles(route)
    by_role: dict[str, Mapping[str, float | None]] = {}
    for release, figures in sample.releases.items() if sample else ():
        role = role_of.get(release)
        if role in ("stable", "canary"):
            by_role[role] = figures
    return {
        "agent": agent,
        "route": route,
        "rollout": rollout_view(route, now) if route is not None else None,
        "fleet": fleet_of(beats, watched, now),
        "stable": by_role.get("stable", {}),
        "canary": by_role.get("canary", {}),
    }


# The unit of what each health-gate check compares (canary and stable figures).
CHECK_UNITS: Final = {
    "max_error_rate_delta": "rate",
    "max_violation_rate_delta": "rate",
    "max_p95_ratio": "ms",
    "max_tokens_change": "count",
    "max_cost_ratio": "usd",
    "min_shadow_similarity": "ratio",
}


def split_checks(checks: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[Any]]:
    """(what a person reads first: failing checks, then the overall ones; the rest), each
    check with its figures' unit."""
    with_unit = [{**c, "unit": CHECK_UNITS.get(str(c.get("gate")), "count")} for c in checks]
    first = [c for c in with_unit if c.get("verdict") == "fail"]
    first += [c for c in with_unit if c.get("scope") == "overall" and c.get("verdict") != "fail"]
    rest = [c for c in with_unit if c not in first]
    return first, rest


def ended_evidence(entry: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What the gate put in the audit entry of the abort (or pause) it made."""
    if entry is None:
        return None
    extra = entry.get("extra") or {}
    gate = extra.get("health_gate") if isinstance(extra, dict) else None
    return {
        "at": entry.get("at"),
        "actor": entry.get("actor"),
        "action": entry.get("action"),
        "reason": entry.get("reason"),
        "checks": list(gate.get("checks") or []) if isinstance(gate, dict) else [],
        "consecutive_fails": gate.get("consecutive_fails") if isinstance(gate, dict) else None,
    }
