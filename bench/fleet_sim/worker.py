"""A process holding many simulated sidecars, driven by the coordinator over a pipe.

Sidecars are grouped by connection: every ``per_connection`` of them share one etcd store (one
gRPC channel, so one watch stream carrying all their watches) and one HTTP client for beats, as
if a node ran that many sidecars behind one connection. etcd still keeps one watcher per range
per sidecar and sends each its own copy of every event, which is what a fleet costs it.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import uvloop

from bench.fleet_sim.model import ROLLOUT_AGENT, TrafficModel
from bench.fleet_sim.sidecar import SimSidecar
from holdfast.logs import configure
from holdfast.store import Store
from holdfast.store.factory import open_store
from sidecar.ops import BeatSender


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    name: str
    endpoints: tuple[str, ...]
    model: TrafficModel
    per_connection: int
    sidecar_token: str
    seed: int


@dataclass(slots=True)
class LoopLag:
    """How late the event loop runs a 100 ms timer: the simulation's own saturation."""

    samples: list[float] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            start = time.monotonic()
            await asyncio.sleep(0.1)
            self.samples.append(time.monotonic() - start - 0.1)
            del self.samples[:-600]

    def figures(self) -> dict[str, float]:
        if not self.samples:
            return {"p50_ms": 0.0, "max_ms": 0.0}
        ordered = sorted(self.samples)
        return {
            "p50_ms": statistics.median(ordered) * 1000,
            "p99_ms": ordered[int(0.99 * (len(ordered) - 1))] * 1000,
            "max_ms": ordered[-1] * 1000,
        }


class Worker:
    def __init__(self, spec: WorkerSpec, conn: Connection) -> None:
        self.spec = spec
        self.conn = conn
        self.sidecars: list[SimSidecar] = []
        self.stores: list[Store] = []
        self.senders: list[BeatSender] = []
        self.bad: set[str] = set()
        self.lag = LoopLag()
        self._fixed: list[bool] = []  # per store: the rollout agent's group
        self._grouped = 0  # sidecars in the newest group

    def _group(self, agent: str) -> tuple[Store, BeatSender]:
        """The store and beat sender the next sidecar shares with its connection group. The
        rollout agent's sidecars have a group of their own, so that what reaches the fleet's
        other sidecars is counted apart from what reaches them (they run at the real pace)."""
        fixed = agent == ROLLOUT_AGENT
        if not self.stores or self._grouped == self.spec.per_connection or fixed != self._fixed[-1]:
            self.stores.append(open_store(self.spec.endpoints))
            self._fixed.append(fixed)
            self._grouped = 0
            timeout = max(1.0, min(self.spec.model.health_interval, 5.0))
            self.senders.append(BeatSender(self.spec.sidecar_token, timeout=timeout))
        self._grouped += 1
        return self.stores[-1], self.senders[-1]

    def _fleet_traffic(self) -> tuple[int, dict[str, list[int]]]:
        """Response bytes the fleet's sidecars (not the rollout agent's) received from etcd,
        and [keys, key+value bytes] per key kind, counted at their adapters."""
        total, kinds = 0, dict[str, list[int]]()
        for store, fixed in zip(self.stores, self._fixed, strict=True):
            if fixed:
                continue
            total += store.traffic.bytes
            for where, (keys, nbytes) in store.traffic.by_dir.items():
                kind = where.split("/")[3] if where.count("/") > 3 else where
                counts = kinds.setdefault(kind, [0, 0])
                counts[0] += keys
                counts[1] += nbytes
        return total, kinds

    async def add(
        self, placed: Sequence[tuple[int, str]], batch: int, patience: float
    ) -> dict[str, Any]:
        """Start sidecars (index, agent), ``batch`` at a time, each batch synced before the
        next. A batch that does not sync within ``patience`` seconds ends the start: the
        machine (or etcd) carries no more, which is a finding, not something to wait out."""
        began = time.monotonic()
        for at in range(0, len(placed), batch):
            fresh = []
            for index, agent in placed[at : at + batch]:
                store, sender = self._group(agent)
                sim = SimSidecar(
                    index, agent, store=store, sender=sender, model=self.spec.model,
                    bad=self.bad, seed=self.spec.seed + index,
                )  # fmt: skip
                self.sidecars.append(sim)
                fresh.append(sim)
            await asyncio.gather(*(s.start() for s in fresh))
            synced = await asyncio.gather(*(s.mirror.wait_synced(patience) for s in fresh))
            if not all(synced):
                return {
                    "seconds": time.monotonic() - began,
                    "stopped": f"a batch of {len(fresh)} sidecars (from #{fresh[0].index}) did "
                    f"not sync within {patience:.0f}s; {len(self.sidecars)} started",
                }
        return {"seconds": time.monotonic() - began, "stopped": ""}

    def state(self) -> dict[str, Any]:
        sims = self.sidecars
        received = [s.traffic.bytes for s in self.stores]
        fleet_bytes, fleet_kinds = self._fleet_traffic()
        return {
            "sidecars": len(sims),
            "routed": sum(1 for s in sims if s.config.current and s.config.current.route),
            "beating_http": sum(1 for s in sims if s.health.mode == "configsvc"),
            "connected": sum(1 for s in sims if s.mirror.connected),
            # Watches re-established after a break (a failed liveness probe restarts them all:
            # on a starved process, a storm of these is what stops changes from arriving).
            "watch_restarts": sum(s.mirror.reconnects for s in sims),
            "resyncs": sum(s.mirror.resyncs for s in sims),
            "probes_excused": sum(s.mirror.probes_excused for s in sims),
            "failovers": dict(
                sum((Counter(getattr(s, "failovers", {})) for s in self.stores), Counter())
            ),
            "beats": sum(s.health.beats for s in sims),
            "etcd_health_writes": sum(s.health.published for s in sims),
            "requests": sum(s.counters.requests for s in sims),
            "first_turns": sum(s.counters.first_turns for s in sims),
            "errors": sum(s.counters.errors for s in sims),
            "failures": sum(s.counters.failures for s in sims),
            "pins_pending": sum(s.writer.pending for s in sims),
            "received_bytes": sum(received),
            "fleet_received_bytes": fleet_bytes,
            "fleet_received_by_kind": fleet_kinds,
            "stores": len(self.stores),
            "loop_lag": self.lag.figures(),
            "cpu_s": sum(os.times()[:2]),
        }

    def applied(self, revisions: dict[str, int]) -> list[tuple[str, float | None]]:
        """(agent, when it first applied its agent's revision -- ``*``: every agent's) of every
        sidecar asked about; None: not yet."""
        out: list[tuple[str, float | None]] = []
        for sim in self.sidecars:
            wanted = revisions.get(sim.agent, revisions.get("*"))
            if wanted is not None:
                out.append((sim.agent, sim.applied.reached(wanted)))
        return out

    async def handle(self, command: str, args: Any) -> Any:
        if command == "add":
            placed, batch, patience = args
            return await self.add(placed, batch, patience)
        if command == "state":
            return self.state()
        if command == "traffic":
            chosen = set(args)
            for sim in self.sidecars:
                if not chosen or sim.index in chosen:
                    sim.start_traffic()
            return len(self.sidecars)
        if command == "applied":
            return self.applied(args)
        if command == "bad":
            self.bad.clear()
            self.bad.update(args)
            return sorted(self.bad)
        raise ValueError(f"unknown command {command!r}")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        lag = loop.create_task(self.lag.run())
        try:
            while True:
                command, args = await loop.run_in_executor(None, self.conn.recv)
                if command == "stop":
                    break
                try:
                    self.conn.send(("ok", await self.handle(command, args)))
                except Exception as exc:  # the coordinator reports it
                    self.conn.send(("error", repr(exc)))
        finally:
            lag.cancel()
            await asyncio.gather(*(s.close() for s in self.sidecars), return_exceptions=True)
            for sender in self.senders:
                await sender.close()
            for store in self.stores:
                await store.close()
            self.conn.send(("ok", "stopped"))


def main(spec: WorkerSpec, conn: Connection) -> None:
    """The worker process's entry point."""
    configure(level="error", fmt="json", service=f"fleet-sim-{spec.name}")
    uvloop.run(Worker(spec, conn).run())
