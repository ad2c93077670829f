"""The sidecar's health snapshot, published to ``health/<sidecar-id>`` under a lease.

The lease is what makes the key mean "alive": a sidecar that dies stops refreshing it and etcd
deletes the key by itself within the TTL (about three intervals). Publishing is best effort:
with etcd away a beat is skipped (logged once per outage) and the data path never waits on it.

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
from typing import Final

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
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = keyspace.health(sidecar_id)
        self.sources = sources
        self._store = store
        self._sidecar_id = sidecar_id
        self._agent = agent
        self._interval = interval
        self._clock = clock
        self._started_at = clock()
        self._lease = LeaseKeeper(store, lease_ttl(interval), on_new_lease=self._on_new_lease)
        self._task = BackgroundTask("health publisher")
        self._failing = False
        self.published = 0

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

    async def start(self) -> None:
        # A first grant that waits on a down etcd must not hold up the sidecar's start.
        self._task.start(self._run)

    async def _on_new_lease(self, lease_id: int) -> None:
        # A new lease (first, or after one expired in an outage) has no key yet: write it now.
        await self.publish_once()

    async def _run(self) -> None:
        await self._lease.start()
        while True:
            await asyncio.sleep(self._interval)
            await self.publish_once()

    async def publish_once(self) -> bool:
        """One beat; False when it was skipped (no lease yet, or etcd did not answer)."""
        lease_id = self._lease.lease_id
        if not lease_id:
            return False
        try:
            value = self.snapshot().encode()
        except Exception:  # a broken source must not stop the beats that follow
            log.exception("health_snapshot_failed")
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
        """Stop beating, publish the final counters once, then revoke: the key goes at once."""
        await self._task.cancel()
        # One budget for both: with etcd away the lease expires on its own anyway.
        try:
            async with asyncio.timeout(CLOSE_BUDGET_S):
                await self.publish_once()
                await self._lease.close(revoke=True)
        except TimeoutError:
            await self._lease.close(revoke=False)
            log.warning("health_lease_not_revoked", key=self.key)
