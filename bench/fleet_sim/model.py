"""The traffic model and the fleet's shape: which simulated sidecar serves which agent, and what
it serves."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Final

ENV: Final = "sim"
RELEASES: Final = ("r1", "r2")
ROLLOUT_AGENT: Final = "roll"  # the agent whose canary goes bad
BIG_AGENT: Final = "big"  # the agent of many sidecars `status` is timed on


PROBE_INTERVAL_S: Final = 2.0  # the sidecar's mirror probes etcd this often (RangeMirror)


@dataclass(frozen=True, slots=True, kw_only=True)
class TrafficModel:
    """What each simulated sidecar does, the same at every fleet size.

    ``dilation`` (1: real time) stretches every period of a simulated sidecar by that factor --
    requests, health beats (and so its presence lease), the liveness probe -- for every agent
    but the rollout agent, whose ten sidecars always run at the real pace. Every per-sidecar
    etcd and configsvc rate then falls by exactly that factor (each is periodic or driven by
    requests), so a machine that cannot run N sidecars in real time can run them dilated; the
    results give the rates multiplied back, and say so. Propagation (a watch pushes) and the
    rollback (the rollout agent) are measured as they are.
    """

    pods_per_agent: int = 10  # a fleet grows by agents, each running this many replicas
    rate: float = 1.0  # requests per second per sidecar ("one light request a second")
    new_sessions: float = 0.1  # the share of requests that are a new session's first turn
    sessions_kept: int = 200  # conversations a sidecar keeps going (turns pick among them)
    health_interval: float = 2.0  # the sidecar's default
    rollout_rate: float = 5.0  # requests per second per sidecar of the rollout agent
    latency_ms: float = 300.0
    tokens_in: int = 400
    tokens_out: int = 120
    dilation: float = 1.0

    def stretch(self, agent: str) -> float:
        return 1.0 if agent == ROLLOUT_AGENT else self.dilation

    def health_interval_of(self, agent: str) -> float:
        return self.health_interval * self.stretch(agent)

    def probe_interval_of(self, agent: str) -> float:
        return PROBE_INTERVAL_S * self.stretch(agent)

    def agent_of(self, index: int, size: int) -> str:
        """Sidecar ``index`` of a fleet of ``size``: the first pods serve the rollout agent,
        the others ``a<n>`` agents of ``pods_per_agent`` sidecars each."""
        if index < self.pods_per_agent:
            return ROLLOUT_AGENT
        return f"a{(index - self.pods_per_agent) // self.pods_per_agent:05d}"

    def agents(self, size: int) -> list[str]:
        return sorted({self.agent_of(i, size) for i in range(size)})

    def interval(self, agent: str, rng: random.Random) -> float:
        """Seconds until the next request (Poisson arrivals)."""
        rate = self.rollout_rate if agent == ROLLOUT_AGENT else self.rate / self.dilation
        return rng.expovariate(rate)
