"""An agent's health at a glance, as the console draws it: each release's last minute and the
agent's live sidecars (``AgentHealth``), computed by the replica that holds the agent's beats and
carried as JSON to the others (``configsvc.health.owners``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from configsvc.health.fleet import FleetHealth, SidecarBeat
from holdfast.keyspace import ShadowStats
from holdfast.signals.summary import by_release, summarize

WINDOW_S: Final = 60.0
_BEAT_FIELDS: Final = SidecarBeat.__slots__


@dataclass(frozen=True, slots=True)
class AgentHealth:
    """``releases``: release -> its last minute's figures; ``beats``: the live sidecars;
    ``replica``: who computed it; ``unreachable``: why no owner answered ("" when one did)."""

    releases: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    beats: tuple[SidecarBeat, ...] = ()
    replica: str = ""
    unreachable: str = ""

    def to_json(self, agent: str) -> dict[str, Any]:
        return {
            "agent": agent,
            "releases": {r: dict(f) for r, f in self.releases.items()},
            # Rows, not objects: an agent of thousands of sidecars is one compact list.
            "sidecars": [[getattr(b, f) for f in _BEAT_FIELDS] for b in self.beats],
            "replica": self.replica,
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> AgentHealth:
        """Raises ValueError (or TypeError, KeyError) on a body that is not one."""
        releases = body["releases"]
        rows = body["sidecars"]
        if not isinstance(releases, dict) or not isinstance(rows, list):
            raise ValueError("releases must be an object and sidecars a list")
        beats = []
        for row in rows:
            if not isinstance(row, list) or len(row) != len(_BEAT_FIELDS):
                raise ValueError("a sidecar row has the wrong shape")
            beat = SidecarBeat(*row)
            if not isinstance(beat.sidecar_id, str) or not isinstance(beat.agent, str):
                raise ValueError("a sidecar row names no sidecar")
            beats.append(beat)
        return cls(
            releases={str(r): dict(f) for r, f in releases.items() if isinstance(f, dict)},
            beats=tuple(beats),
            replica=str(body.get("replica", "")),
        )


def release_figures(
    fleet: FleetHealth, agent: str, now: float, *, shadows: bool = True
) -> dict[str, dict[str, Any]]:
    """The last minute of each release of ``agent`` that served (or, with ``shadows``,
    was compared as a shadow) in it."""
    out: dict[str, dict[str, Any]] = {}
    windows = fleet.windows
    for release, signals in by_release(windows.window(agent, WINDOW_S, now).values()).items():
        m = summarize(signals)
        out[release] = {
            "requests": m.requests,
            "error_rate": m.error_rate,
            "p50_ms": m.p50_ms,
            "p95_ms": m.p95_ms,
            "ttft_p50_ms": m.ttft_p50_ms,
            "ttft_p95_ms": m.ttft_p95_ms,
            "tokens": m.tokens_in + m.tokens_out,
            "cost_usd": m.cost_usd,
            "violations": m.violations,
        }
    if shadows:
        for release, similarity in shadow_similarity(windows.shadow_window(agent, WINDOW_S, now)):
            out.setdefault(release, {"requests": 0})["shadow_similarity"] = similarity
    return out


def shadow_similarity(stats: Iterable[ShadowStats]) -> list[tuple[str, float | None]]:
    """Mean similarity of each shadow release's answers to its primaries'."""
    sums: dict[str, tuple[float, int]] = {}
    for s in stats:
        total, n = sums.get(s.shadow, (0.0, 0))
        sums[s.shadow] = (total + s.similarity_sum, n + s.samples)
    return [(r, total / n if n else None) for r, (total, n) in sorted(sums.items())]


def local_health(
    fleet: FleetHealth, agent: str, now: float, *, shadows: bool = True, replica: str = ""
) -> AgentHealth:
    """The agent's health as this replica holds it."""
    return AgentHealth(
        releases=release_figures(fleet, agent, now, shadows=shadows),
        beats=tuple(fleet.beats(agent)),
        replica=replica,
    )
