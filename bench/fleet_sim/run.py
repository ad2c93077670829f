"""One fleet size, end to end: the control plane, the simulated sidecars, the phases, the figures.

Phases, in order, with a deadline over all of them:

1. start the control plane (3-member etcd, configsvc replicas), configure every agent;
2. start the simulated sidecars in batches, wait until each has its route and sends beats;
3. traffic for a warm-up, then a steady window: etcd's egress, ingress, writes and DB growth,
   configsvc's CPU, the beats delivered;
4. a ``flag kill``, then a ``canary set`` on every agent: when each sidecar applied it;
5. a gated rollout on one agent whose canary then fails: when it was aborted, and when every
   sidecar of the agent served stable again;
6. (1,000 sidecars and more) 1,000 more sidecars of one agent, and ``status`` for it.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

from bench.fleet_sim import metrics
from bench.fleet_sim.control import ControlPlane, Operator, control_plane
from bench.fleet_sim.model import BIG_AGENT, RELEASES, ROLLOUT_AGENT, TrafficModel
from bench.fleet_sim.worker import WorkerSpec, main
from holdfast_devtools import procs

SIM_BASE_URL = "http://127.0.0.1:9/v1"  # releases name a provider the simulation never calls
STATUS_SIDECARS = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    replicas: int = 2
    workers: int = 1
    per_connection: int = 0  # 0: one connection per sidecar up to 1,000, then size // 1,000
    warmup: float = 10.0
    window: float = 30.0
    baseline: float = 20.0  # the rollout agent alone, before the fleet starts
    settle: float = 20.0  # how long a change may take to reach every sidecar
    deadline: float = 1200.0  # seconds for one size, whatever happens
    batch: int = 100
    patience: float = 60.0  # a batch of sidecars not synced by then ends the start
    model: TrafficModel = field(default_factory=TrafficModel)


@dataclass(slots=True)
class Latency:
    n: int
    missing: int
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None

    @classmethod
    def of(cls, delays: Sequence[float | None]) -> Latency:
        got = sorted(d for d in delays if d is not None)
        result = cls(n=len(delays), missing=len(delays) - len(got))
        if got:
            result.p50_ms = statistics.median(got) * 1000
            result.p99_ms = got[int(0.99 * (len(got) - 1))] * 1000
            result.max_ms = got[-1] * 1000
        return result


@dataclass(slots=True)
class SizeResult:
    size: int
    dilation: float = 1.0
    agents: int = 0
    per_connection: int = 1
    started_s: float = 0.0
    synced: int = 0
    window: metrics.Window | None = None
    baseline: metrics.Window | None = None  # the rollout agent and configsvc alone, real pace
    keys: float = 0.0
    watchers: float = 0.0
    streams: float = 0.0
    beats_per_s: float = 0.0
    requests_per_s: float = 0.0
    first_turns_per_s: float = 0.0
    sim_cpu: float = 0.0  # cores the simulator itself used
    adapter_bytes_per_s: float = 0.0  # what the fleet's sidecars received, at their adapters
    adapter_kinds_per_s: dict[str, tuple[float, float]] = field(default_factory=dict)
    loop_lag: dict[str, float] = field(default_factory=dict)
    flag_kill: Latency | None = None
    canary_set: Latency | None = None
    rollback: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    gave: list[str] = field(default_factory=list)
    failures: int = 0
    watch_restarts: int = 0  # over the whole run, all sidecars
    resyncs: int = 0
    probes_excused: int = 0  # failed probes not held against etcd (the loop was starved)
    final_read: bool = False  # the counters above were read at the end of the run
    failovers: dict[str, int] = field(default_factory=dict)  # the fleet's stores', by reason


class Fleet:
    """The worker processes and the commands they are sent (to all of them at once)."""

    def __init__(self, specs: Sequence[WorkerSpec]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs = []
        for spec in specs:
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=main, args=(spec, theirs), name=spec.name, daemon=True)
            proc.start()
            self.conns.append(ours)
            self.procs.append(proc)

    async def call(self, command: str, args: Sequence[Any] | None = None) -> list[Any]:
        """``command`` to every worker (``args[i]`` to worker i; None: no argument)."""
        argv = list(args) if args is not None else [None] * len(self.conns)

        def one(conn: Connection, arg: Any) -> Any:
            conn.send((command, arg))
            status, result = conn.recv()
            if status != "ok":
                raise RuntimeError(f"worker: {command}: {result}")
            return result

        return list(
            await asyncio.gather(
                *(asyncio.to_thread(one, c, a) for c, a in zip(self.conns, argv, strict=True))
            )
        )

    async def everyone(self, command: str, arg: Any = None) -> list[Any]:
        return await self.call(command, [arg] * len(self.conns))

    async def state(self) -> dict[str, Any]:
        states = await self.everyone("state")
        nested = ("loop_lag", "fleet_received_by_kind", "failovers")
        total: dict[str, Any] = {k: sum(s[k] for s in states) for k in states[0] if k not in nested}
        kinds: dict[str, list[int]] = {}
        for s in states:
            for kind, (keys, nbytes) in s["fleet_received_by_kind"].items():
                counts = kinds.setdefault(kind, [0, 0])
                counts[0] += keys
                counts[1] += nbytes
        total["fleet_received_by_kind"] = kinds
        total["failovers"] = dict(sum((Counter(s["failovers"]) for s in states), Counter()))
        total["loop_lag"] = {
            k: max(s["loop_lag"].get(k, 0.0) for s in states)
            for k in ("p50_ms", "p99_ms", "max_ms")
        }
        return total

    async def applied(self, revisions: dict[str, int]) -> list[tuple[str, float | None]]:
        """(agent, applied at) of every sidecar watching for one of ``revisions``."""
        return [pair for part in await self.everyone("applied", revisions) for pair in part]

    async def stop(self) -> None:
        def one(conn: Connection) -> None:
            try:
                conn.send(("stop", None))
                conn.recv()
            except (EOFError, OSError):
                pass

        await asyncio.gather(*(asyncio.to_thread(one, c) for c in self.conns))
        for proc in self.procs:
            proc.join(30)
            if proc.is_alive():
                proc.kill()


async def wait_applied(
    fleet: Fleet, revisions: dict[str, int], settle: float
) -> list[tuple[str, float | None]]:
    deadline = time.monotonic() + settle
    while True:
        applied = await fleet.applied(revisions)
        if all(t is not None for _, t in applied) or time.monotonic() > deadline:
            return applied
        await asyncio.sleep(0.2)


def split(placed: list[tuple[int, str]], parts: int) -> list[list[tuple[int, str]]]:
    """Contiguous shares, so that an agent's sidecars stay together."""
    size = -(-len(placed) // parts)
    return [placed[i * size : (i + 1) * size] for i in range(parts)]


async def run_size(size: int, opts: Options, log: Any) -> SizeResult:
    result = SizeResult(size=size, dilation=opts.model.dilation)
    try:
        async with asyncio.timeout(opts.deadline):
            await _run(size, opts, result, log)
    except TimeoutError:
        result.gave.append(f"the run did not finish within its {opts.deadline:.0f}s deadline")
    except Exception as exc:  # whatever broke is the finding: report it, go on to the next size
        result.gave.append(f"the run failed: {exc!r}")
    return result


async def _run(size: int, opts: Options, result: SizeResult, log: Any) -> None:
    model = opts.model
    per_connection = opts.per_connection or max(1, size // 1000)
    result.per_connection = per_connection
    base = Path(tempfile.mkdtemp(prefix=f"fleet-sim-{size}-"))
    with control_plane(base, opts.replicas) as cp:
        async with aiohttp.ClientSession() as http:
            op = Operator(http, cp.url, cp.admin_token)
            agents = model.agents(size)
            result.agents = len(agents)
            extra = [BIG_AGENT] if size >= STATUS_SIDECARS else []
            log(f"size {size}: configuring {len(agents) + len(extra)} agents")
            await op.configure([*agents, *extra], SIM_BASE_URL)
            specs = [
                WorkerSpec(
                    name=f"w{i}",
                    endpoints=tuple(cp.endpoints),
                    model=model,
                    per_connection=per_connection,
                    sidecar_token=cp.sidecar_token,
                    seed=1000 * i,
                )
                for i in range(opts.workers)
            ]
            fleet = Fleet(specs)
            try:
                await _phases(size, opts, result, cp, op, fleet, log)
            finally:
                await fleet.stop()


async def _phases(
    size: int,
    opts: Options,
    result: SizeResult,
    cp: ControlPlane,
    op: Operator,
    fleet: Fleet,
    log: Any,
) -> None:
    model = opts.model
    placed = [(i, model.agent_of(i, size)) for i in range(size)]
    rollout_pods = min(size, model.pods_per_agent)
    result.baseline = await _baseline(opts, cp, fleet, placed[:rollout_pods], log)
    log(f"size {size}: starting {size - rollout_pods} more sidecars")
    began = time.monotonic()
    parts = split(placed[rollout_pods:], opts.workers)
    started = await fleet.call("add", [(part, opts.batch, opts.patience) for part in parts])
    for outcome in started:
        if outcome["stopped"]:
            result.gave.append(f"start: {outcome['stopped']}")
    state: dict[str, Any] = {}
    settle_by = time.monotonic() + opts.patience
    while time.monotonic() < settle_by:
        state = await fleet.state()
        if state["routed"] == state["beating_http"] == state["connected"] == state["sidecars"]:
            break
        await asyncio.sleep(0.5)
    result.started_s = time.monotonic() - began
    result.synced = min(state["routed"], state["beating_http"], state["connected"])
    if result.synced < size:
        result.gave.append(
            f"only {result.synced} of {size} sidecars had their route, their watch and a replica "
            f"after {result.started_s:.0f}s"
        )
    await fleet.everyone("traffic", [])
    # Every sidecar's first requests open new sessions (it has none to continue): a one-off
    # burst of pin writes, and their fan-out, spread over the first few request intervals. A
    # dilated sidecar's interval is k times longer, so its warm-up is too: else the window
    # measures the start, multiplied back by k.
    warmup = max(opts.warmup, WARM_INTERVALS * opts.model.dilation / opts.model.rate)
    log(f"size {size}: started in {result.started_s:.1f}s; traffic, warm-up {warmup:.0f}s")
    await asyncio.sleep(warmup)
    a, s0 = metrics.read(cp.cluster, cp.replicas), await fleet.state()
    await asyncio.sleep(opts.window)
    b, s1 = metrics.read(cp.cluster, cp.replicas), await fleet.state()
    window = metrics.Window.between(a, b)
    result.window = window
    result.keys, result.watchers, result.streams = b.keys, b.watchers, b.streams
    result.beats_per_s = (s1["beats"] - s0["beats"]) / window.seconds
    result.requests_per_s = (s1["requests"] - s0["requests"]) / window.seconds
    result.first_turns_per_s = (s1["first_turns"] - s0["first_turns"]) / window.seconds
    result.sim_cpu = (s1["cpu_s"] - s0["cpu_s"]) / window.seconds
    # Counted where it arrives, at the fleet's own adapters (the rollout agent's apart): bytes
    # of etcd's responses, and key+value bytes per kind, per second of the window.
    result.adapter_bytes_per_s = (
        s1["fleet_received_bytes"] - s0["fleet_received_bytes"]
    ) / window.seconds
    before = s0["fleet_received_by_kind"]
    result.adapter_kinds_per_s = {
        kind: (keys - before.get(kind, [0, 0])[0], nbytes - before.get(kind, [0, 0])[1])
        for kind, (keys, nbytes) in s1["fleet_received_by_kind"].items()
    }
    result.adapter_kinds_per_s = {
        kind: (keys / window.seconds, nbytes / window.seconds)
        for kind, (keys, nbytes) in result.adapter_kinds_per_s.items()
        if keys or nbytes
    }
    result.loop_lag = s1["loop_lag"]
    expected = rollout_pods / model.health_interval + (size - rollout_pods) / (
        model.health_interval * model.dilation
    )
    if result.beats_per_s < 0.9 * expected:
        result.gave.append(
            f"beats delivered {result.beats_per_s:.0f}/s of {expected:.0f}/s expected"
        )
    for i, busy in enumerate(window.configsvc_cpu):
        if busy > 0.9:
            result.gave.append(f"configsvc replica {i} busy {busy:.2f} cores")
    if result.loop_lag.get("p99_ms", 0.0) > 500:
        result.gave.append(
            f"the simulator's event loop lagged (p99 {result.loop_lag['p99_ms']:.0f} ms)"
        )
    log(f"size {size}: window done: {window}")

    revision, sent = await op.kill_flag()
    applied = await wait_applied(fleet, {"*": revision}, opts.settle)
    result.flag_kill = Latency.of([t - sent if t is not None else None for _, t in applied])
    log(f"size {size}: flag kill {result.flag_kill}")

    sent_at: dict[str, float] = {}
    revisions: dict[str, int] = {}
    gate = asyncio.Semaphore(16)

    refused: list[str] = []

    async def canary(agent: str) -> None:
        async with gate:
            try:
                revisions[agent], sent_at[agent] = await op.canary(agent, 10.0)
            except RuntimeError as exc:  # configsvc refused (etcd too slow): a finding
                refused.append(str(exc))

    others = [a for a in model.agents(size) if a != ROLLOUT_AGENT]
    await asyncio.gather(*(canary(a) for a in others))
    if refused:
        result.gave.append(
            f"configsvc refused {len(refused)} of {len(others)} canary calls (first: "
            f"{refused[0][:300]})"
        )
    applied = await wait_applied(fleet, revisions, opts.settle)
    result.canary_set = Latency.of(
        [t - sent_at[agent] if t is not None else None for agent, t in applied]
    )
    # Agents whose call was refused never got the change: missing, not left out.
    result.canary_set.n += model.pods_per_agent * len(refused)
    result.canary_set.missing += model.pods_per_agent * len(refused)
    log(f"size {size}: canary set {result.canary_set}")

    if (result.flag_kill.missing or 0) or (result.canary_set.missing or 0):
        result.gave.append(f"a change did not reach every sidecar within {opts.settle:.0f}s")
    try:
        result.rollback = await _rollback(opts, op, fleet)
        log(f"size {size}: rollback {result.rollback}")
        if size >= STATUS_SIDECARS:
            result.status = await _status(size, opts, cp, op, fleet, log)
            log(f"size {size}: status {result.status}")
    finally:  # what the fleet went through, whatever ended the phases
        final = await fleet.state()
        result.final_read = True
        result.failures = final["failures"]
        result.watch_restarts = final["watch_restarts"]
        result.probes_excused = final["probes_excused"]
        result.failovers = final["failovers"]
        if result.failures:
            result.gave.append(f"{result.failures} simulated requests failed in the simulator")


WARM_INTERVALS = 3.0  # mean request intervals of a sidecar before the steady window


async def _baseline(
    opts: Options, cp: ControlPlane, fleet: Fleet, rollout: list[tuple[int, str]], log: Any
) -> metrics.Window:
    """The control plane with the rollout agent's sidecars only, at their real pace, as at
    every size: the part of every rate that is not the dilated fleet's (configsvc's own reads
    and watches, the rollout agent's traffic), so that it is neither multiplied back by the
    dilation nor divided among the fleet's sidecars."""
    log(f"baseline: the rollout agent's {len(rollout)} sidecars alone")
    await fleet.call(
        "add", [(rollout, opts.batch, opts.patience)] + [([], 1, 0.0)] * (len(fleet.conns) - 1)
    )
    await fleet.everyone("traffic", [i for i, _ in rollout])
    await asyncio.sleep(opts.warmup)
    a = metrics.read(cp.cluster, cp.replicas)
    await asyncio.sleep(opts.baseline)
    window = metrics.Window.between(a, metrics.read(cp.cluster, cp.replicas))
    log(f"baseline: {window}")
    return window


POLICY = {"max_error_rate_delta": 0.1, "min_samples": 20, "fails_to_abort": 2}


async def _rollback(opts: Options, op: Operator, fleet: Fleet) -> dict[str, Any]:
    started = await op.rollout(ROLLOUT_AGENT, POLICY)
    revision = int(started["mod_revision"])
    await wait_applied(fleet, {ROLLOUT_AGENT: revision}, opts.settle)
    await asyncio.sleep(3 * opts.model.health_interval + 2)  # the canary takes traffic, healthy
    status = await op.rollout_status(ROLLOUT_AGENT)
    if status["rollout"]["state"] != "running":
        return {"error": f"the rollout is {status['rollout']['state']} before the canary failed"}
    await fleet.everyone("bad", [RELEASES[1]])
    bad_at = time.time()
    try:
        deadline = time.monotonic() + 60
        while True:
            status = await op.rollout_status(ROLLOUT_AGENT)
            if status["rollout"]["state"] == "aborted":
                break
            if time.monotonic() > deadline:
                return {"error": "not aborted within 60s", "last": status["rollout"]}
            await asyncio.sleep(0.1)
        aborted_at = time.time()
        abort_revision = int(status["mod_revision"])
        applied = await wait_applied(fleet, {ROLLOUT_AGENT: abort_revision}, opts.settle)
    finally:
        await fleet.everyone("bad", [])
    last = max((t for _, t in applied if t is not None), default=None)
    return {
        "bad_to_abort_s": aborted_at - bad_at,
        "bad_to_all_stable_s": (last - bad_at) if last is not None else None,
        "sidecars": len(applied),
        "missing": sum(1 for _, t in applied if t is None),
        "reason": status["rollout"].get("reason", ""),
    }


async def _status(
    size: int, opts: Options, cp: ControlPlane, op: Operator, fleet: Fleet, log: Any
) -> dict[str, Any]:
    placed = [(size + i, BIG_AGENT) for i in range(STATUS_SIDECARS)]
    log(f"size {size}: {STATUS_SIDECARS} more sidecars of agent {BIG_AGENT}")
    added = await fleet.call(
        "add", [(part, opts.batch, opts.patience) for part in split(placed, len(fleet.conns))]
    )
    stopped = "; ".join(a["stopped"] for a in added if a.get("stopped"))
    if stopped:
        log(f"size {size}: adding {BIG_AGENT}: {stopped}")
    await fleet.everyone("traffic", [i for i, _ in placed])
    deadline = time.monotonic() + 120
    seen = 0
    while time.monotonic() < deadline:
        body = await op.status(BIG_AGENT)
        seen = body["agents"][0]["sidecars"]
        if seen >= STATUS_SIDECARS:
            break
        await asyncio.sleep(1)
    await asyncio.sleep(2 * opts.model.health_interval)
    api = []
    for _ in range(5):
        t = time.perf_counter()
        await op.status(BIG_AGENT)
        api.append(time.perf_counter() - t)
    cli = []
    env = {**os.environ, "HOLDFAST_TOKEN": cp.admin_token}
    for _ in range(3):
        t = time.perf_counter()
        done = await asyncio.to_thread(
            subprocess.run,
            [procs.script("holdfastctl"), "--server", cp.url, "--json", "status", BIG_AGENT],
            env=env, capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        cli.append(time.perf_counter() - t)
        if done.returncode != 0:
            return {"error": done.stderr.decode()[-500:]}
    body = json.loads(done.stdout)["agents"][0]
    return {
        "start": stopped or "all started",
        "sidecars_seen": body["sidecars"],
        "answered_by": body.get("health_replica"),
        "api_p50_s": statistics.median(api),
        "api_max_s": max(api),
        "cli_p50_s": statistics.median(cli),
        "cli_max_s": max(cli),
    }
