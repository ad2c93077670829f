"""Tool-contract counters: Prometheus metrics, and plain per-(release, tool) stats for health.

``ContractStats.stats()`` returns plain dicts (one per release and tool) for ``/status``, and
``tool_signals()`` the same counts as mergeable ``ToolSignals`` records for the health snapshot
(configsvc sums them over the fleet per release and tool); Prometheus gets the same events as
labelled counters and a latency histogram.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from holdfast.contracts.breaker import STATE_VALUE, State
from holdfast.keyspace.signals import LATENCY_BOUNDS_MS, bucket_index
from holdfast.keyspace.tool_signals import (
    ERROR_PREFIX,
    HIST_LEN,
    MAX_TOOL_SIGNALS,
    VIOLATION_PREFIX,
    ToolSignals,
)

TOOL_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MAX_KEYS: Final = 10_000  # releases x tools this process keeps plain stats for


@dataclass(slots=True)
class ToolStats:
    release: str
    tool: str
    version: str = ""
    violations: dict[str, int] = field(default_factory=dict)  # kind -> count
    calls: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # outcome -> count
    latency_sum_s: float = 0.0
    latency_max_s: float = 0.0
    unavailable: int = 0
    latency_ms: list[int] = field(default_factory=lambda: [0] * HIST_LEN)

    def signals(self) -> ToolSignals:
        counts = {"calls": self.calls, "unavailable": self.unavailable}
        counts.update({f"{ERROR_PREFIX}{k}": v for k, v in self.errors.items()})
        counts.update({f"{VIOLATION_PREFIX}{k}": v for k, v in self.violations.items()})
        return ToolSignals(
            release=self.release,
            tool=self.tool,
            version=self.version,
            counts={k: v for k, v in counts.items() if v},
            latency_ms_sum=self.latency_sum_s * 1000,
            latency_ms=tuple(self.latency_ms),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "tool": self.tool,
            "version": self.version,
            "violations": dict(self.violations),
            "violations_total": sum(self.violations.values()),
            "calls": self.calls,
            "errors": dict(self.errors),
            "errors_total": sum(self.errors.values()),
            "latency_avg_s": self.latency_sum_s / self.calls if self.calls else 0.0,
            "latency_max_s": self.latency_max_s,
            "unavailable": self.unavailable,
        }


class ContractStats:
    def __init__(self, registry: CollectorRegistry, agent: str) -> None:
        self.agent = agent
        self.violations = Counter(
            "holdfast_contract_violations",
            "Tool-contract violations by release, tool, kind (declared, call, args, result) "
            "and what the sidecar did (rejected, rewritten, reported).",
            ["agent", "release", "tool", "version", "kind", "action"],
            registry=registry,
        )
        self.tool_calls = Counter(
            "holdfast_tool_calls",
            "Calls through POST /tools/{tool}, by outcome (ok or the error class).",
            ["agent", "release", "tool", "version", "outcome"],
            registry=registry,
        )
        self.tool_duration = Histogram(
            "holdfast_tool_call_duration_seconds",
            "Time a call through POST /tools/{tool} took, backend included.",
            ["agent", "release", "tool"],
            buckets=TOOL_BUCKETS,
            registry=registry,
        )
        self.circuit = Gauge(
            "holdfast_tool_circuit_state",
            "Circuit breaker of each tool backend (transport failures): 0 closed, 1 half-open, "
            "2 open.",
            ["backend"],
            registry=registry,
        )
        self.result_circuit = Gauge(
            "holdfast_tool_result_circuit_state",
            "Circuit breaker of each contract version (results breaking its schema): 0 closed, "
            "1 half-open, 2 open.",
            ["tool", "version"],
            registry=registry,
        )
        self.unavailable = Counter(
            "holdfast_contract_unavailable",
            "Requests whose release pins a contract version this sidecar does not hold.",
            ["agent", "release", "tool", "version"],
            registry=registry,
        )
        self._stats: dict[tuple[str, str], ToolStats] = {}

    def _entry(self, release: str, tool: str, version: str) -> ToolStats:
        entry = self._stats.get((release, tool))
        if entry is None:
            if len(self._stats) >= MAX_KEYS:
                self._stats.clear()
            entry = self._stats[(release, tool)] = ToolStats(release, tool)
        entry.version = version
        return entry

    def violation(self, release: str, tool: str, version: str, kind: str, action: str) -> None:
        self.violations.labels(self.agent, release, tool, version, kind, action).inc()
        entry = self._entry(release, tool, version)
        entry.violations[kind] = entry.violations.get(kind, 0) + 1

    def missing(self, release: str, tool: str, version: str) -> None:
        self.unavailable.labels(self.agent, release, tool, version).inc()
        self._entry(release, tool, version).unavailable += 1

    def tool_call(
        self, release: str, tool: str, version: str, outcome: str, seconds: float
    ) -> None:
        self.tool_calls.labels(self.agent, release, tool, version, outcome).inc()
        self.tool_duration.labels(self.agent, release, tool).observe(seconds)
        entry = self._entry(release, tool, version)
        entry.calls += 1
        entry.latency_sum_s += seconds
        entry.latency_max_s = max(entry.latency_max_s, seconds)
        entry.latency_ms[bucket_index(LATENCY_BOUNDS_MS, seconds * 1000)] += 1
        if outcome != "ok":
            entry.errors[outcome] = entry.errors.get(outcome, 0) + 1

    def circuit_state(self, backend: str, state: State) -> None:
        self.circuit.labels(backend).set(STATE_VALUE[state])

    def result_circuit_state(self, tool: str, version: str, state: State) -> None:
        self.result_circuit.labels(tool, version).set(STATE_VALUE[state])

    def stats(self) -> list[dict[str, Any]]:
        """Cumulative counters per (release, tool) since start, as plain dicts."""
        return [entry.to_json() for _, entry in sorted(self._stats.items())]

    def tool_signals(self) -> tuple[ToolSignals, ...]:
        """The same counters as health-snapshot records (at most MAX_TOOL_SIGNALS)."""
        entries = sorted(self._stats.items())[:MAX_TOOL_SIGNALS]
        return tuple(entry.signals() for _, entry in entries)
