"""The measured phases. Each runs every path in short rounds, rotating the order per round, so
slow drift of a noisy machine lands on all paths alike; around each round it records the CPU
time of the relay, the load generator, the fake upstream and everybody else, and each core's
busy and stolen time, and (for a Holdfast sidecar) reads its event-loop lag histogram."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench import looplag
from bench.cpu import RELAY, CoreTimes, Gate, Probe, Usage, disturbance, tree_rss
from bench.http1 import Target
from bench.loadgen import LoadResult, closed_loop, fired, open_loop
from bench.looplag import Histogram
from bench.stack import SESSION_HEADER, Endpoint

PROMPT = [{"role": "user", "content": "Where is my order 1234? It was due on Monday."}]
Runner = Callable[[Endpoint, Target], Awaitable[LoadResult]]
STREAM_POOL = 48  # connections opened up front for the streaming phase


def chat_target(endpoint: Endpoint, *, stream: bool) -> Target:
    payload: dict[str, Any] = {"model": endpoint.fast_model, "messages": PROMPT}
    if stream:
        payload["model"] = endpoint.stream_model
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return Target.chat(endpoint.base_url, payload, dict(endpoint.headers))


@dataclass
class PathRun:
    """One path's rounds of one phase, merged."""

    load: LoadResult = field(default_factory=LoadResult)
    round_rates: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by role
    cores: list[CoreTimes] = field(default_factory=list)
    lag: Histogram | None = None  # event-loop lag during the rounds (a Holdfast sidecar's)

    def add(self, load: LoadResult, usage: Usage, lag: Histogram | None = None) -> None:
        if lag is not None:
            self.lag = lag if self.lag is None else self.lag + lag
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
        rotation: list[tuple[str, LoadResult, Usage, Histogram | None]] = []
        for endpoint in [*endpoints[shift:], *endpoints[:shift]]:
            probe = probes[endpoint.name]
            lag_before = await _lag(endpoint)  # scraped outside the CPU window
            probe.start()
            load = await run(endpoint, targets[endpoint.name])
            usage = probe.stop()
            lag_after = await _lag(endpoint)
            lag = None if lag_before is None or lag_after is None else lag_after - lag_before
            rotation.append((endpoint.name, load, usage, lag))
        worst = max(disturbance(usage, load.elapsed) for _, load, usage, _ in rotation)
        seconds = sum(load.elapsed for _, load, _, _ in rotation)
        if await ctx.gate.redo(phase, worst, seconds):
            continue
        for name, load, usage, lag in rotation:
            runs[name].add(load, usage, lag)
        done += 1
    return runs


async def _lag(endpoint: Endpoint) -> Histogram | None:
    return None if endpoint.metrics_url is None else await looplag.read(endpoint.metrics_url)


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
    async def run(endpoint: Endpoint, target: Target) -> LoadResult:
        return await open_loop(target, rate, seconds / rounds)

    return await interleave(ctx, "latency", rounds, False, run)


def new_sessions(target: Target, count: int) -> list[bytes]:
    """``count`` encodings of ``target``, each opening a session nobody has used before."""
    tag = secrets.token_hex(6)
    return [target.with_header(SESSION_HEADER, f"first-{tag}-{i}").encode() for i in range(count)]


async def first_turns(
    ctx: Context,
    rate: float,
    seconds: float,
    rounds: int,
    name: str = "first turn",
) -> dict[str, PathRun]:
    """Open loop; on a ``first_turns`` path every request is a new session's first turn (the
    sidecar settles its pin with etcd before answering), on the others the same request each
    time (a later turn of a pinned session, through the sidecar)."""

    async def run(endpoint: Endpoint, target: Target) -> LoadResult:
        duration = seconds / rounds
        requests = new_sessions(target, fired(rate, duration)) if endpoint.first_turns else None
        return await open_loop(target, rate, duration, requests=requests)

    return await interleave(ctx, name, rounds, False, run)


async def throughput(
    ctx: Context,
    concurrency: int,
    seconds: float,
    rounds: int,
) -> dict[str, PathRun]:
    async def run(endpoint: Endpoint, target: Target) -> LoadResult:
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

    async def run(endpoint: Endpoint, target: Target) -> LoadResult:
        return await open_loop(target, rate, seconds / rounds, pool=STREAM_POOL)

    return await interleave(ctx, "streaming", rounds, True, run)


async def profile_load(endpoint: Endpoint, concurrency: int, seconds: float) -> None:
    """Unmeasured closed-loop load for a profiler to sample."""
    await closed_loop(chat_target(endpoint, stream=False), concurrency, seconds)


def rss_mb(pid: int | None) -> float:
    """Resident MB of a relay's process tree (a peer may run several processes)."""
    if pid is None:
        return float("nan")
    return tree_rss(pid) / (1024 * 1024)
