"""One simulated sidecar: the sidecar's etcd- and configsvc-facing modules, wired as
``sidecar.app.Sidecar`` wires them, and a traffic loop in place of the HTTP surface."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import deque
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from bench.fleet_sim.model import ENV, TrafficModel
from holdfast.keyspace import Keyspace
from holdfast.store import Store
from holdfast.store.mirror import RangeMirror
from sidecar.config import CONFIG_KINDS, ConfigSnapshot, ConfigState, sidecar_ranges
from sidecar.ops import BeatSender, HealthPublisher, HealthSources, Replicas, WatchFeed
from sidecar.pins import PinClaims, Pinning, PinTable, PinWriter
from sidecar.pins.metrics import PinMetrics
from sidecar.settings.model import (
    DEFAULT_MAX_PENDING_PINS,
    DEFAULT_PIN_CREATE_TIMEOUT,
    DEFAULT_PIN_TTL,
)
from sidecar.signals import SignalBook
from sidecar.signals.book import Observation


@dataclass(slots=True)
class Applied:
    """When this sidecar applied each config snapshot (the newest few thousand): asked about a
    revision afterwards, it answers when it first reached it."""

    history: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=4096))

    def note(self, revision: int, now: float) -> None:
        self.history.append((revision, now))

    def reached(self, revision: int) -> float | None:
        return next((at for rev, at in self.history if rev >= revision), None)


@dataclass(slots=True)
class Counters:
    requests: int = 0
    first_turns: int = 0
    errors: int = 0
    failures: int = 0  # the simulation's own trouble (a claim that raised)


class SimSidecar:
    def __init__(
        self,
        index: int,
        agent: str,
        *,
        store: Store,
        sender: BeatSender,
        model: TrafficModel,
        bad: set[str],
        seed: int,
    ) -> None:
        self.index = index
        self.agent = agent
        self.model = model
        self.bad = bad  # releases that fail now (shared by the worker's sidecars)
        self.sidecar_id = f"{agent}.sim-{index}"
        self._rng = random.Random(seed)
        keyspace = Keyspace(ENV)
        self.config = ConfigState(keyspace, agent, kinds=CONFIG_KINDS)
        self.pins = PinTable(keyspace, agent)
        self.replicas = Replicas(keyspace, agent)
        self.mirror = RangeMirror(
            store,
            sidecar_ranges(keyspace, agent, CONFIG_KINDS),
            probe_interval=model.probe_interval_of(agent),
        )
        self.mirror.subscribe(WatchFeed(self.config, self.pins, self.replicas))
        metrics = PinMetrics(CollectorRegistry(auto_describe=False), agent)
        self.writer = PinWriter(
            store, self.pins, keyspace, metrics, ttl=DEFAULT_PIN_TTL,
            max_pending=DEFAULT_MAX_PENDING_PINS,
        )  # fmt: skip
        claims = PinClaims(
            store, keyspace, self.writer, metrics, timeout=DEFAULT_PIN_CREATE_TIMEOUT
        )
        self.pinning = Pinning(agent, self.pins, metrics, ttl=DEFAULT_PIN_TTL, claims=claims)
        self.signals = SignalBook()
        self.health = HealthPublisher(
            store,
            keyspace,
            sidecar_id=self.sidecar_id,
            agent=agent,
            interval=model.health_interval_of(agent),
            sources=HealthSources(
                config_revision=lambda: self.config.current.revision if self.config.current else 0,
                pins=lambda: (len(self.pins), self.writer.pending),
                signals=self.signals.signals,
                sessions=self.signals.spreads,
            ),
            replicas=self.replicas,
            sender=sender,
        )
        self.applied = Applied()
        self.config.on_change(self._on_config)
        self.counters = Counters()
        self._sessions: deque[str] = deque(maxlen=model.sessions_kept)
        self._ids = itertools.count()
        self._traffic: asyncio.Task[None] | None = None

    def _on_config(self, snapshot: ConfigSnapshot) -> None:
        self.applied.note(snapshot.revision, time.time())

    async def start(self) -> None:
        await self.writer.start()
        await self.mirror.start()
        await self.health.start()

    def start_traffic(self) -> None:
        if self._traffic is None:  # the rollout agent's started before the rest of the fleet
            self._traffic = asyncio.get_running_loop().create_task(self._serve())

    async def close(self) -> None:
        if self._traffic is not None:
            self._traffic.cancel()
            await asyncio.gather(self._traffic, return_exceptions=True)
        await self.health.close()
        await self.writer.close(flush_timeout=0)
        await self.mirror.close()

    async def _serve(self) -> None:
        while True:
            await asyncio.sleep(self.model.interval(self.agent, self._rng))
            try:
                await self.request()
            except Exception:  # the simulation must go on; counted, and shown in the results
                self.counters.failures += 1

    async def request(self) -> None:
        """One request as the proxy resolves it: a pinned session's release (a dict lookup), or
        a new session's first turn settled with etcd; then what the signals filter records."""
        snapshot = self.config.current
        if snapshot is None or snapshot.route is None:
            return
        new = not self._sessions or self._rng.random() < self.model.new_sessions
        session = f"{self.sidecar_id}-{next(self._ids)}" if new else self._pick()
        resolved = self.pinning.lookup(snapshot, self.agent, session)
        if resolved is None:
            self.counters.first_turns += 1
            resolved = await self.pinning.first_turn(snapshot, self.agent, session)
        if new:
            self._sessions.append(session)
        release = resolved.release.name
        failed = release in self.bad
        self.counters.requests += 1
        self.counters.errors += failed
        self.signals.record(
            Observation(
                release=release,
                category="default",
                session=session,
                code="upstream_5xx" if failed else "ok",
                latency_s=self.model.latency_ms / 1000 * self._rng.uniform(0.5, 1.5),
                tokens_in=self.model.tokens_in,
                tokens_out=0 if failed else self.model.tokens_out,
                usage_known=not failed,
                answered=not failed,
            )
        )

    def _pick(self) -> str:
        return self._sessions[self._rng.randrange(len(self._sessions))]
