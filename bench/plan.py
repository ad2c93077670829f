"""What one benchmark run does (load shapes, durations) and the targets it judges the sidecar
by: issue 20's, each relative to the bare relay measured in the same run except the loop lag,
the memory and the first turn, which are absolute."""

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
    first_turn_rate: float = 50.0  # open loop, each first turn a new session (a pin in etcd)
    first_turn_seconds: float = 6.0  # per path (direct, first turns, later turns)
    first_turn_rounds: int = 6
    # The first-turn phase runs twice: against the fake provider answering at once (what the
    # etcd claim costs on its own) and answering after this long (a provider that takes any
    # time at all: the claim runs beside the call). 10 ms is far below any hosted model's
    # time to first token, and above what the claim takes on this machine.
    provider_ms: float = 10.0
    concurrency: int = 64  # closed-loop connections (throughput)
    throughput_seconds: float = 10.0
    throughput_rounds: int = 5
    stream_rate: float = 20.0  # streams started per second, open loop (issue 20's shape)
    stream_seconds: float = 12.0
    stream_rounds: int = 4
    stream_tokens: int = 200  # completion tokens per stream (one SSE event each)
    token_interval_ms: float = 1.0  # fake upstream's delay between streamed chunks

    def scaled(self, factor: float) -> Plan:
        """The same plan with every duration multiplied by ``factor`` (a quick smoke run)."""
        return dataclasses.replace(
            self,
            warmup_seconds=self.warmup_seconds * factor,
            latency_seconds=self.latency_seconds * factor,
            first_turn_seconds=self.first_turn_seconds * factor,
            throughput_seconds=self.throughput_seconds * factor,
            stream_seconds=self.stream_seconds * factor,
        )


@dataclass(frozen=True, slots=True)
class Target:
    """``limit`` in ``unit``; a unit starting with ``x`` or ``%`` is a ratio to the bare relay."""

    what: str
    limit: float
    unit: str
    at_most: bool  # True: the figure must be <= limit; False: >= limit
    digits: int = 2  # decimals the figure is shown with

    def met(self, value: float) -> bool:
        if value != value:  # NaN: nothing measured
            return False
        return value <= self.limit if self.at_most else value >= self.limit

    @property
    def text(self) -> str:
        return f"{'≤' if self.at_most else '≥'} {self.limit:g} {self.unit}".strip()

    def shown(self, value: float) -> str:
        """``value`` in this target's unit, as the results show it."""
        figure = "-" if value != value else f"{value:,.{self.digits}f}"
        return f"{figure} {self.unit}".strip()


CPU_PER_REQUEST: Final = Target(
    "relay CPU per request, 64 connections", 1.6, "x bare relay", at_most=True
)
THROUGHPUT: Final = Target("throughput on one core", 60.0, "% of bare relay", at_most=False)
ADDED_P99: Final = Target(
    "added latency p99 at 200 req/s", 1.5, "x bare relay's added p99", at_most=True
)
TTFT_P99: Final = Target("TTFT p99 at 20 streams/s", 2.0, "x bare relay's", at_most=True)
LOOP_LAG: Final = Target("event-loop lag p99", 2.0, "ms", at_most=True)
CPU_PER_EVENT: Final = Target("relay CPU per relayed SSE event", 1.2, "x bare relay", at_most=True)
RSS: Final = Target("RSS after the run", 70.0, "MB", at_most=True)
FAILED: Final = Target("requests that failed through the sidecar", 0, "", at_most=True, digits=0)
FIRST_TURN: Final = Target("first turn added p50 above a later turn's", 1.0, "ms", at_most=True)
