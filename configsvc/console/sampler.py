"""The console's view of each agent's health, computed once per tick for every viewer.

Every ``INTERVAL_S`` (and never per page view or per viewer) it takes each agent's last minute
from the replica that holds the agent's health -- this one's windows, or its owners asked once
per tick (``configsvc.health.OwnerHealth``), with their list of the agent's live sidecars -- per
release: requests, error rate, latency and time-to-first-token
quantiles, tokens, cost, contract violations, similarity as a shadow -- and records it in the
bounded history the charts draw. The health gate's report on a running rollout is asked for
when a page shows it, at most once per tick per agent. Pages and live updates read what the
last tick computed, so their cost does not grow with the fleet; the tick's own cost is the
fleet windows' aggregation (``holdfast_console_sample_seconds`` on configsvc's /metrics).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from configsvc.console.history import Figures, History
from configsvc.health import AgentHealth, FleetHealth, OwnerHealth, PolicyGate, SidecarBeat
from configsvc.health import release_figures as release_figures
from configsvc.health import shadow_similarity as shadow_similarity
from configsvc.rollouts import RouteWatch
from holdfast.background import BackgroundTask
from holdfast.keyspace import Route
from holdfast.logs import get_logger

log = get_logger(__name__)

INTERVAL_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class AgentSample:
    at: float
    releases: Mapping[str, Figures]
    replica: str = ""  # the replica that holds the agent's health ("": this one, alone)
    unreachable: str = ""  # why none of the agent's owners answered ("": one did)


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
    owners: OwnerHealth | None = None  # None: this replica holds every agent's health
    _beats: dict[str, tuple[SidecarBeat, ...]] = field(default_factory=dict)
    _task: BackgroundTask = field(default_factory=lambda: BackgroundTask("console sampler"))

    def agents(self) -> set[str]:
        # Every sidecar's presence is in etcd, so every replica knows every agent with sidecars.
        return set(self.routes.routes) | {b.agent for b in self.fleet.beats()}

    def beats(self, agent: str) -> tuple[SidecarBeat, ...]:
        """The agent's live sidecars as its owner described them at the last tick (this
        replica's own view for an agent it holds, or one not sampled yet)."""
        if self.owners is None or self.owners.holds(agent) or agent not in self._beats:
            return tuple(self.fleet.beats(agent))
        return self._beats[agent]

    def all_beats(self) -> dict[str, tuple[SidecarBeat, ...]]:
        return {agent: self.beats(agent) for agent in self.agents()}

    def _shadows(self, agent: str) -> bool:
        # Similarity is drawn for a route with a shadow (or none known): it costs a second
        # pass over the fleet's windows.
        watched = self.routes.routes.get(agent)
        return watched is None or watched.route.shadow is not None

    async def sample(self) -> frozenset[str]:
        """One tick, the owners of agents held elsewhere asked first (one request per group)."""
        agents = self.agents()
        if self.owners is None:
            return self.sample_once()
        health = await self.owners.gather(sorted(agents), self.clock(), self._shadows)
        return self.sample_once(health)

    def sample_once(self, health: Mapping[str, AgentHealth] | None = None) -> frozenset[str]:
        """One tick: every agent sampled, from ``health`` where given (what the owners said),
        else from this replica's windows; returns the agents sampled."""
        started = time.perf_counter()
        now = self.clock()
        agents = self.agents() | set(health or ())
        routes = self.routes.routes
        for agent in agents:
            watched = routes.get(agent)
            held = (health or {}).get(agent)
            if held is None:
                held = AgentHealth(
                    releases=release_figures(self.fleet, agent, now, shadows=self._shadows(agent))
                )
            else:
                self._beats[agent] = held.beats
            figures = {r: dict(f) for r, f in held.releases.items()}
            if watched is not None:
                for name in in_route(watched.route):
                    figures.setdefault(name, {"requests": 0})
            self.history.record(agent, now, figures)
            self.latest[agent] = AgentSample(now, figures, held.replica, held.unreachable)
        for gone in set(self.latest) - agents:
            del self.latest[gone]
            self._reports.pop(gone, None)
            self._beats.pop(gone, None)
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
                await self.sample()
            except Exception:  # a bad tick must not end the charts for good
                log.exception("console_sample_failed")
            await asyncio.sleep(self.interval)
