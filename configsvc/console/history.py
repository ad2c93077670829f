"""A bounded history of each agent's per-release health, sampled from the fleet's windows.

Every sample is the last minute's figures per release (so tokens and cost are per minute),
taken at one moment for all of an agent's releases, so the series of two releases line up
side by side. The newest ``POINTS`` samples are kept; an agent that is gone is forgotten.
Pure: no I/O.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

POINTS: Final = 360  # at the sampler's 5 s: the last 30 minutes
# name -> (label, unit): what a chart shows, in the order the console shows it.
SERIES: Final[Mapping[str, tuple[str, str]]] = {
    "requests": ("requests / min", "count"),
    "error_rate": ("error rate", "rate"),
    "p50_ms": ("latency p50", "ms"),
    "p95_ms": ("latency p95", "ms"),
    "ttft_p50_ms": ("time to first token p50", "ms"),
    "ttft_p95_ms": ("time to first token p95", "ms"),
    "tokens": ("tokens / min", "count"),
    "cost_usd": ("cost / min", "usd"),
    "violations": ("contract violations / min", "count"),
    "shadow_similarity": ("shadow similarity", "ratio"),
}

Figures = Mapping[str, float | None]


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    releases: Mapping[str, Figures]


@dataclass(slots=True)
class History:
    points: int = POINTS
    _agents: dict[str, deque[Sample]] = field(default_factory=dict)

    def record(self, agent: str, at: float, releases: Mapping[str, Figures]) -> None:
        ring = self._agents.get(agent)
        if ring is None:
            ring = self._agents[agent] = deque(maxlen=self.points)
        ring.append(Sample(at, dict(releases)))

    def forget(self, keep: Iterable[str]) -> None:
        """Drop every agent but those in ``keep``."""
        wanted = set(keep)
        for agent in set(self._agents) - wanted:
            del self._agents[agent]

    def times(self, agent: str) -> list[float]:
        return [s.at for s in self._agents.get(agent, ())]

    def series(self, agent: str, release: str, name: str) -> list[float | None]:
        """One figure of one release over the samples (None where the release had none)."""
        out: list[float | None] = []
        for s in self._agents.get(agent, ()):
            figures = s.releases.get(release)
            out.append(figures.get(name) if figures is not None else None)
        return out

    def releases(self, agent: str) -> set[str]:
        return {r for s in self._agents.get(agent, ()) for r in s.releases}

    def latest(self, agent: str) -> Sample | None:
        ring = self._agents.get(agent)
        return ring[-1] if ring else None
