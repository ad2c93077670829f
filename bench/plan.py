"""What one benchmark run does (load shapes, durations) and the targets it reports against."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    warmup_seconds: float = 1.0  # per path and shape, before anything is measured
    rate: float = 200.0  # open-loop requests per second (latency)
    latency_seconds: float = 10.0  # per path, split into rounds
    latency_rounds: int = 10
    concurrency: int = 64  # closed-loop connections (throughput)
    throughput_seconds: float = 10.0
    throughput_rounds: int = 5
    stream_rate: float = 50.0  # streams started per second, open loop (~14 in flight)
    stream_seconds: float = 8.0
    stream_rounds: int = 4
    stream_tokens: int = 200  # completion tokens per stream (one SSE event each)
    token_interval_ms: float = 1.0  # fake upstream's delay between streamed chunks

    def scaled(self, factor: float) -> Plan:
        """The same plan with every duration multiplied by ``factor`` (a quick smoke run)."""
        return dataclasses.replace(
            self,
            warmup_seconds=self.warmup_seconds * factor,
            latency_seconds=self.latency_seconds * factor,
            throughput_seconds=self.throughput_seconds * factor,
            stream_seconds=self.stream_seconds * factor,
        )


@dataclass(frozen=True, slots=True)
class Target:
    what: str
    limit: float
    unit: str
    at_most: bool  # True: the figure must be <= limit; False: >= limit

    def met(self, value: float) -> bool:
        if value != value:  # NaN: nothing measured
            return False
        return value <= self.limit if self.at_most else value >= self.limit

    @property
    def text(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {self.limit:g} {self.unit}".strip()


ADDED_P50: Final = Target("added latency p50 at 200 req/s", 1.0, "ms", at_most=True)
ADDED_P99: Final = Target("added latency p99 at 200 req/s", 3.0, "ms", at_most=True)
THROUGHPUT: Final = Target("throughput on one core", 2500.0, "req/s", at_most=False)
VS_BARE: Final = Target("throughput vs the bare relay", 50.0, "%", at_most=False)
CPU_PER_EVENT: Final = Target("CPU per relayed SSE event", 60.0, "µs", at_most=True)
RSS: Final = Target("RSS after the runs", 80.0, "MB", at_most=True)
