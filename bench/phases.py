"""The measured phases. Each runs every path in short rounds, rotating the order per round, so
slow drift of a noisy machine lands on all paths alike; around each round it records the CPU
time of the relay, the load generator, the fake upstream and everybody else, and each core's
busy and stolen time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psutil

from bench.cpu import RELAY, CoreTimes, Gate, Probe, Usage, disturbance
from bench.http1 import Target
from bench.loadgen import LoadResult, closed_loop, open_loop
from bench.stack import Endpoint

PROMPT = [{"role": "user", "content": "Where is my order 1234? It was due on Monday."}]
Runner = Callable[[Target], Awaitable[LoadResult]]
STREAM_POOL = 48  # connections opened up front for the streaming phase


def chat_target(endpoint: Endpoint, *, stream: bool) -> Target:
    payload: dict[str, Any] = {"model": endpoint.fast_model, "messages": PROMPT}
    if stream:
        payload["model"] = endpoint.stream_model
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return Target.chat(endpoint.base_url, payload)


@dataclass
class PathRun:
    """One path's rounds of one phase, merged."""

    load: LoadResult = field(default_factory=LoadResult)
    round_rates: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by role
    cores: list[CoreTimes] = field(default_factory=list)

    def add(self, load: LoadResult, usage: Usage) -> None:
        self.load.merge(load)
        self.round_rates.append(load.rate)
        for role, seconds in usage.cpu.items():
            self.cpu[role] = self.cpu.get(role, 0.0) + seconds
        if self.cores:
            self.cores = [a + b for a, b in zip(self.cores, usage.cores, strict=True)]
        else:
            self.cores = list(usage.cores)

    @property
    def proxy_cpu(self) -> float:
        """CPU seconds the relay spent during this path's rounds."""
        return self.cpu.get(RELAY, 0.0)

    def share(self, role: str) -> float:
        """Share of one core that ``role`` used while this path's rounds ran."""
        return self.cpu.get(role, 0.0) / self.load.elapsed if self.load.elapsed else 0.0

    def core_share(self, core: int | None) -> float:
        """Busy share of the time ``core`` was ours (not stolen) while the rounds ran."""
        if core is None or core >= len(self.cores):
            return float("nan")
        c = self.cores[core]
        return c.busy / (c.total - c.steal) if c.total > c.steal else float("nan")

    def stolen(self, core: int | None) -> float:
        """Share of the wall time the hypervisor gave ``core`` to someone else."""
        if core is None or core >= len(self.cores) or not self.cores[core].total:
            return float("nan")
        return self.cores[core].steal / self.cores[core].total


@dataclass(frozen=True, slots=True)
class Context:
    """What every phase runs against: the paths, the processes to account CPU for
    (role: pid, the relay's added per path), and the gate that re-runs disturbed rounds."""

    endpoints: Sequence[Endpoint]
    roles: Mapping[str, int | None]
    gate: Gate


async def interleave(
    ctx: Context, phase: str, rounds: int, stream: bool, run: Runner
) -> dict[str, PathRun]:
    """Run every path ``rounds`` times, rotating the order each time. A rotation during which
    other processes used more than the gate allows is discarded and run again (budget
    permitting), so bursts of someone else's work do not land on one path only."""
    endpoints = ctx.endpoints
    runs = {e.name: PathRun() for e in endpoints}
    targets = {e.name: chat_target(e, stream=stream) for e in endpoints}
    probes = {e.name: Probe({RELAY: e.pid, **ctx.roles}) for e in endpoints}
    done = 0
    while done < rounds:
        shift = done % len(endpoints)
        rotation: list[tuple[str, LoadResult, Usage]] = []
        for endpoint in [*endpoints[shift:], *endpoints[:shift]]:
            probe = probes[endpoint.name]
            probe.start()
            load = await run(targets[endpoint.name])
            rotation.append((endpoint.name, load, probe.stop()))
        worst = max(disturbance(usage, load.elapsed) for _, load, usage in rotation)
        seconds = sum(load.elapsed for _, load, _ in rotation)
        if await ctx.gate.redo(phase, worst, seconds):
            continue
        for name, load, usage in rotation:
            runs[name].add(load, usage)
        done += 1
    return runs


async def warm_up(endpoints: Sequence[Endpoint], concurrency: int, seconds: float) -> None:
    """Open the relays' upstream pools and let every process settle before measuring."""
    for endpoint in endpoints:
        for stream in (False, True):
            await closed_loop(chat_target(endpoint, stream=stream), concurrency, seconds)


async def latency(
    ctx: Context,
    rate: float,
    seconds: float,
    rounds: int,
) -> dict[str, PathRun]:
    async def run(target: Target) -> LoadResult:
        return await open_loop(target, rate, seconds / rounds)

    return await interleave(ctx, "latency", rounds, False, run)


async def throughput(
    ctx: Context,
    concurrency: int,
    seconds: float,
    rounds: int,
) -> dict[str, PathRun]:
    async def run(target: Target) -> LoadResult:
        return await closed_loop(target, concurrency, seconds / rounds)

    return await interleave(ctx, "throughput", rounds, False, run)


async def streaming(
    ctx: Context,
    rate: float,
    seconds: float,
    rounds: int,
) -> dict[str, PathRun]:
    """Streams started at a steady rate (a closed loop would start them in lockstep bursts,
    and TTFT would measure the burst rather than the relay)."""

    async def run(target: Target) -> LoadResult:
        return await open_loop(target, rate, seconds / rounds, pool=STREAM_POOL)

    return await interleave(ctx, "streaming", rounds, True, run)


async def profile_load(endpoint: Endpoint, concurrency: int, seconds: float) -> None:
    """Unmeasured closed-loop load for a profiler to sample."""
    await closed_loop(chat_target(endpoint, stream=False), concurrency, seconds)


def rss_mb(pid: int | None) -> float:
    if pid is None:
        return float("nan")
    return psutil.Process(pid).memory_info().rss / (1024 * 1024)
