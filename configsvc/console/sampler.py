"""The console's view of each agent's health, computed once per tick for every viewer.

Every ``INTERVAL_S`` (and never per page view or per viewer) it takes each agent's last minute
from the fleet's windows -- per release: requests, error rate, latency and time-to-first-token
quantiles, tokens, cost, contract violations, similarity as a shadow -- and records it in the
bounded history the charts draw. The health gate's report on a running rollout is asked for
when a page shows it, at most once per tick per agent. Pages and live updates read what the
last tick computed, so their cost does not grow with the fleet; the tick's own cost is the
fleet windows' aggregation (``holdfast_console_sample_seconds`` on configsvc's /metrics).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from configsvc.console.history import Figures, History
from configsvc.health import FleetHealth, PolicyGate
from configsvc.rollouts import RouteWatch
from holdfast.background import BackgroundTask
from holdfast.keyspace import Route, ShadowStats
from holdfast.logs import get_logger
from holdfast.signals.summary import by_release, summarize

log = get_logger(__name__)

INTERVAL_S: Final = 5.0
WINDOW_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class AgentSample:
    at: float
    releases: Mapping[str, Figures]


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


def in_route(route: Route) -> list[str]:
    """The releases a route gives traffic to (stable, canary, shadow), charted even when idle."""
    names = [route.stable]
    if route.canary and route.canary_percent > 0:
        names.append(route.canary)
    if route.shadow is not None and route.shadow.percent > 0:
        names.append(route.shadow.release)
    return names


@dataclass
class Sampler:
    fleet: FleetHealth
    gate: PolicyGate
    routes: RouteWatch
    history: History = field(default_factory=History)
    interval: float = INTERVAL_S
    clock: Callable[[], float] = time.time
    latest: dict[str, AgentSample] = field(default_factory=dict)
    listeners: list[Callable[[frozenset[str]], None]] = field(default_factory=list)
    ticks: int = 0
    _reports: dict[str, tuple[int, dict[str, Any] | None]] = field(default_factory=dict)
    latest_at: float | None = None  # when the last tick ran
    last_cost_s: float = 0.0
    _task: BackgroundTask = field(default_factory=lambda: BackgroundTask("console sampler"))

    def agents(self) -> set[str]:
        return set(self.routes.routes) | {b.agent for b in self.fleet.beats()}

    def sample_once(self) -> frozenset[str]:
        """One tick: every agent sampled; returns the agents sampled."""
        started = time.perf_counter()
        now = self.clock()
        agents = self.agents()
        routes = self.routes.routes
        for agent in agents:
            watched = routes.get(agent)
            # Similarity is drawn for a route with a shadow (or none known): it costs a second
            # pass over the fleet's windows.
            shadows = watched is None or watched.route.shadow is not None
            figures = release_figures(self.fleet, agent, now, shadows=shadows)
            if watched is not None:
                for name in in_route(watched.route):
                    figures.setdefault(name, {"requests": 0})
            self.history.record(agent, now, figures)
            self.latest[agent] = AgentSample(now, figures)
        for gone in set(self.latest) - agents:
            del self.latest[gone]
            self._reports.pop(gone, None)
        self.history.forget(agents)
        self.ticks += 1
        self.latest_at = now
        self.last_cost_s = time.perf_counter() - started
        sampled = frozenset(agents)
        for callback in self.listeners:
            callback(sampled)
        return sampled

    def gate_report(self, agent: str) -> dict[str, Any] | None:
        """The health gate's report on ``agent``'s running rollout (None: none running, or no
        policy), evaluated at most once per tick however many pages show it."""
        cached = self._reports.get(agent)
        if cached is not None and cached[0] == self.ticks:
            return cached[1]
        watched = self.routes.routes.get(agent)
        rollout = watched.route.rollout if watched is not None else None
        report = None
        if watched is not None and rollout is not None and rollout.active and rollout.policy:
            report = self.gate.report(agent, rollout, watched.route.stable)
        self._reports[agent] = (self.ticks, report)
        return report

    def start(self) -> None:
        self._task.start(self._run)

    async def close(self) -> None:
        await self._task.cancel()

    async def _run(self) -> None:
        while True:
            try:
                self.sample_once()
            except Exception:  # a bad tick must not end the charts for good
                log.exception("console_sample_failed")
            await asyncio.sleep(self.interval)
