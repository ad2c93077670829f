"""The sidecar's health snapshot: beats to the agent's configsvc replicas, presence in etcd.

Every interval the snapshot goes, over HTTP, to the replicas that hold this agent's health
(``sidecar.ops.beats``): a beat is not an etcd write, so a fleet's health costs etcd nothing
per beat. ``health/<sidecar-id>`` in etcd is the sidecar's presence: written under the sidecar's
lease whenever a lease is granted (the snapshot at that moment), kept alive by keepalives
(which etcd's leader answers without a raft write), and gone within the TTL (about three
intervals) of the sidecar dying, or at once when it stops. configsvc learns from it which
sidecars are alive, as before.

While the sidecar knows no replica (``Replicas.use_etcd``: configsvc not running, or an older
one that does not register), every beat goes into that key instead, as before the replicas
took beats. Publishing is best effort: a beat that cannot be delivered is skipped (logged once
per outage) and the data path never waits on it; counters are cumulative, so the next beat
carries everything.

A snapshot is assembled from ``HealthSources``, one callable per part, so that a new part
(pins, shadow comparisons, later errors, latency and tokens per release) plugs in without
touching the publishing loop.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from holdfast.background import BackgroundTask
from holdfast.keyspace import HealthSnapshot, Keyspace, ShadowStats
from holdfast.keyspace.drift import McpDrift
from holdfast.keyspace.session_spread import SessionSpread
from holdfast.keyspace.signals import ReleaseSignals
from holdfast.keyspace.tool_signals import ToolSignals
from holdfast.logs import get_logger
from holdfast.store import Store
from holdfast.store.errors import StoreError
from holdfast.store.lease import LeaseKeeper
from sidecar.ops.beats import BeatSender, Replicas

log = get_logger(__name__)

TTL_INTERVALS: Final = 3
MIN_TTL_S: Final = 2
# On shutdown the last publish and the revoke get this long at most: a down etcd must not
# hold up the process exit (the lease then just expires on its own).
CLOSE_BUDGET_S: Final = 2.0
MIN_PUT_TIMEOUT_S: Final = 1.0


def _no_pins() -> tuple[int, int]:
    return (0, 0)


def _no_shadow() -> tuple[ShadowStats, ...]:
    return ()


def _no_signals() -> tuple[ReleaseSignals, ...]:
    return ()


def _no_sessions() -> tuple[SessionSpread, ...]:
    return ()


def _no_tools() -> tuple[ToolSignals, ...]:
    return ()


def _no_traffic() -> dict[str, int]:
    return {}


def _no_drift() -> tuple[McpDrift, ...]:
    return ()


@dataclass(slots=True, kw_only=True)
class HealthSources:
    """Where each part of a snapshot comes from; callables are read at every beat."""

    config_revision: Callable[[], int]
    pins: Callable[[], tuple[int, int]] = _no_pins  # (cached, pending)
    shadow: Callable[[], tuple[ShadowStats, ...]] = _no_shadow
    signals: Callable[[], tuple[ReleaseSignals, ...]] = _no_signals
    sessions: Callable[[], tuple[SessionSpread, ...]] = _no_sessions
    tools: Callable[[], tuple[ToolSignals, ...]] = _no_tools  # per release x tool
    traffic: Callable[[], dict[str, int]] = _no_traffic  # per dialect (x feature) served
    mcp_drift: Callable[[], tuple[McpDrift, ...]] = _no_drift  # the most recent drifts


def build_snapshot(
    sources: HealthSources, *, sidecar_id: str, agent: str, started_at: float, now: float
) -> HealthSnapshot:
    cached, pending = sources.pins()
    return HealthSnapshot(
        sidecar_id=sidecar_id,
        agent=agent,
        at=now,
        started_at=started_at,
        config_revision=sources.config_revision(),
        pins_cached=cached,
        pins_pending=pending,
        shadow=sources.shadow(),
        signals=sources.signals(),
        sessions=sources.sessions(),
        tools=sources.tools(),
        traffic=sources.traffic(),
        mcp_drift=sources.mcp_drift(),
    )


def lease_ttl(interval: float) -> int:
    return max(MIN_TTL_S, math.ceil(TTL_INTERVALS * interval))


class HealthPublisher:
    def __init__(
        self,
        store: Store,
        keyspace: Keyspace,
        *,
        sidecar_id: str,
        agent: str,
        interval: float,
        sources: HealthSources,
        replicas: Replicas | None = None,
        sender: BeatSender | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = keyspace.health(sidecar_id)
        self.sources = sources
        self.replicas = Replicas(keyspace, agent) if replicas is None else replicas
        self.sender = (
            BeatSender("", timeout=max(MIN_PUT_TIMEOUT_S, interval)) if sender is None else sender
        )
        self._store = store
        self._sidecar_id = sidecar_id
        self._agent = agent
        self._interval = interval
        self._clock = clock
        self._started_at = clock()
        self._lease = LeaseKeeper(store, lease_ttl(interval), on_new_lease=self._on_new_lease)
        self._task = BackgroundTask("health publisher")
        self._failing = False
        self.published = 0  # etcd writes (presence, and beats while no replica is known)
        self.beats = 0  # beats delivered to at least one replica

    @property
    def ttl(self) -> int:
        return self._lease.ttl

    def snapshot(self) -> HealthSnapshot:
        return build_snapshot(
            self.sources,
            sidecar_id=self._sidecar_id,
            agent=self._agent,
            started_at=self._started_at,
            now=self._clock(),
        )

    @property
    def mode(self) -> str:
        """Where beats go now: ``configsvc`` (HTTP to the owners) or ``etcd`` (no replica)."""
        return "etcd" if self.replicas.use_etcd() else "configsvc"

    async def start(self) -> None:
        # A first grant that waits on a down etcd must not hold up the sidecar's start.
        await self.sender.start()
        self._task.start(self._run)

    async def _on_new_lease(self, lease_id: int) -> None:
        # A new lease (first, or after one expired in an outage) has no key yet: write it now.
        await self.write_presence()

    async def _run(self) -> None:
        await self._lease.start()
        while True:
            await asyncio.sleep(self._interval)
            await self.beat()

    def _encoded(self) -> bytes | None:
        try:
            return self.snapshot().encode()
        except Exception:  # a broken source must not stop the beats that follow
            log.exception("health_snapshot_failed")
            return None

    async def beat(self) -> bool:
        """One beat, to the owner replicas (or into etcd while none is known); False when it
        reached nobody."""
        if self.replicas.use_etcd():
            return await self.write_presence()
        targets = self.replicas.owners()
        value = self._encoded()
        if value is None or not targets:
            return False
        outcomes = await asyncio.gather(*(self.sender.send(m, value) for m in targets))
        if "delivered" not in outcomes:
            return False
        self.beats += 1
        return True

    async def publish_once(self) -> bool:
        """One beat as it is now: HTTP to the replicas, or etcd while none is known."""
        return await self.beat()

    async def write_presence(self) -> bool:
        """The snapshot into ``health/<sidecar-id>`` under the lease; False when skipped (no
        lease yet, or etcd did not answer)."""
        lease_id = self._lease.lease_id
        if not lease_id:
            return False
        value = self._encoded()
        if value is None:
            return False
        try:
            # A beat that cannot land soon is worthless: the next one carries newer numbers.
            async with asyncio.timeout(max(MIN_PUT_TIMEOUT_S, self._interval)):
                await self._store.put(self.key, value, lease=lease_id)
        except (StoreError, TimeoutError) as exc:
            if not self._failing:
                self._failing = True
                log.warning("health_publish_failed", key=self.key, error=str(exc) or "timeout")
            return False
        if self._failing:
            self._failing = False
            log.info("health_publish_resumed", key=self.key)
        self.published += 1
        return True

    async def close(self) -> None:
        """Stop beating, send the final counters once, then revoke: the key goes at once."""
        await self._task.cancel()
        # One budget for both: with etcd away the lease expires on its own anyway.
        try:
            async with asyncio.timeout(CLOSE_BUDGET_S):
                await self.beat()
                await self._lease.close(revoke=True)
        except TimeoutError:
            await self._lease.close(revoke=False)
            log.warning("health_lease_not_revoked", key=self.key)
        await self.sender.close()

    def status(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "interval_s": self._interval,
            "owners": [m.replica for m in self.replicas.owners()],
            "replicas_known": len(self.replicas),
            "beats_delivered": self.beats,
            "etcd_writes": self.published,
            "targets": self.sender.status(),
        }
