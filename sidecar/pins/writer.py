"""Takes the pin table's pending entries to etcd, in the background, whatever etcd's state.

Pins live under leases that are never kept alive: a fresh lease is granted at most every
refresh interval and new writes attach to the newest one, so a pin disappears about TTL after
its session was last used, even if this sidecar dies or hangs. Writes are compare-and-swaps:
a create must find no key (another sidecar may have pinned the session first: adopt its pin),
a refresh or notice must find the revision it read (a concurrent migration wins).

A write dropped because the queue is over its bound is parked when etcd is still owed it (a
create, an acknowledged notice) and queued again once the queue has drained: a dropped create
reaches etcd eventually, even if the session is never used again. The request path's
first-turn claims (``sidecar.pin_claim``) attach to this writer's lease as well.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

from holdfast.background import BackgroundTask
from holdfast.keyspace import Keyspace, Pin
from holdfast.logs import get_logger
from holdfast.store import Put, Store
from holdfast.store.errors import CasConflict, LeaseNotFound, StoreError, StoreUnavailable
from sidecar.pins.metrics import PinMetrics
from sidecar.pins.table import PinTable, refresh_interval

log = get_logger(__name__)

RETRY_INITIAL_S: Final = 0.2
RETRY_MAX_S: Final = 5.0
BATCH: Final = 64
CLOSE_FLUSH_S: Final = 2.0


class PinWriter:
    def __init__(
        self,
        store: Store,
        table: PinTable,
        keyspace: Keyspace,
        metrics: PinMetrics,
        *,
        ttl: int,
        max_pending: int,
        clock: Callable[[], float] = time.time,
        retry_initial: float = RETRY_INITIAL_S,
        retry_max: float = RETRY_MAX_S,
    ) -> None:
        self._store = store
        self._table = table
        self._keyspace = keyspace
        self._metrics = metrics
        self.ttl = ttl
        self.refresh_s = refresh_interval(ttl)
        # Two refresh intervals on top: a pin is re-attached only once its lease is up to one
        # interval old and its session up to one interval past its last refresh.
        self.lease_ttl = ttl + 2 * math.ceil(self.refresh_s)
        self.max_pending = max_pending
        self._clock = clock
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        # Sessions to write, oldest first, value = when queued (monotonic). Creates apart, so
        # that an overflow drops refreshes before it drops a session's only record.
        self._creates: OrderedDict[str, float] = OrderedDict()
        self._updates: OrderedDict[str, float] = OrderedDict()
        self._inflight: dict[str, float] = {}  # taken from the queues, being written
        self._parked: OrderedDict[str, float] = OrderedDict()  # dropped, still owed to etcd
        self._lease_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task = BackgroundTask("pin writer")
        self.lease_id = 0
        self._lease_at = 0.0
        self.failures = 0
        self.conflicts = 0
        self.dropped = 0
        self.written = 0
        table.on_pending(self.enqueue)

    @property
    def pending(self) -> int:
        return len(self._creates) + len(self._updates) + len(self._inflight)

    @property
    def _queued(self) -> int:
        return len(self._creates) + len(self._updates)

    def oldest_pending_age(self) -> float | None:
        oldest = [q[next(iter(q))] for q in (self._creates, self._updates, self._parked) if q]
        oldest += self._inflight.values()
        return max(0.0, time.monotonic() - min(oldest)) if oldest else None

    @property
    def parked(self) -> int:
        return len(self._parked)

    def enqueue(self, session: str) -> None:
        """Queue a write of the session's entry; queued twice, it is written once (latest)."""
        entry = self._table.get(session)
        if entry is None:
            return
        now = self._parked.pop(session, None) or time.monotonic()
        if entry.mod_revision == 0:
            queued = self._updates.pop(session, None)
            self._creates.setdefault(session, now if queued is None else queued)
        elif session not in self._creates:
            self._updates.setdefault(session, now)
        while self.pending > self.max_pending and self._queued:
            self._drop_oldest()
        self._wake.set()

    def _drop_oldest(self) -> None:
        queue, kind = (self._updates, "refresh") if self._updates else (self._creates, "create")
        session, queued_at = queue.popitem(last=False)
        if self._table.give_up(session):
            self._parked[session] = queued_at
        self.dropped += 1
        self._metrics.dropped.inc()
        log.warning("pin_write_dropped", session=session, kind=kind, limit=self.max_pending)

    def _take(self) -> list[tuple[str, float, bool]]:
        batch: list[tuple[str, float, bool]] = []
        for queue, create in ((self._creates, True), (self._updates, False)):
            while queue and len(batch) < BATCH:
                session, queued_at = queue.popitem(last=False)
                batch.append((session, queued_at, create))
                self._inflight[session] = queued_at
        return batch

    def _requeue(self, session: str, queued_at: float, create: bool) -> None:
        # Back at the front with its original age, unless it was queued again meanwhile.
        entry = self._table.get(session)
        if entry is None or not entry.pending:
            return
        if session in self._creates or session in self._updates:
            return
        queue = self._creates if create or entry.mod_revision == 0 else self._updates
        queue[session] = queued_at
        queue.move_to_end(session, last=False)

    async def start(self) -> None:
        self._task.start(self._run)

    async def close(self, *, flush_timeout: float = CLOSE_FLUSH_S) -> None:
        await self._task.cancel()
        if self.pending and flush_timeout > 0:
            # A departing sidecar hands its last pins to etcd if it can; the rest stay in the
            # saved pin table and are written by its next start.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(flush_timeout):
                    while self._queued and await self._flush_batch():
                        pass

    async def _run(self) -> None:
        delay = self._retry_initial
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queued or self._unpark():
                if await self._flush_batch():
                    delay = self._retry_initial
                    continue
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)

    def _unpark(self) -> bool:
        """Queue parked writes again, as many as the bound allows; False when none was."""
        moved = False
        while self._parked and self.pending < self.max_pending:
            session, queued_at = self._parked.popitem(last=False)
            entry = self._table.get(session)
            if entry is None or not entry.pending:
                continue  # etcd's watch settled it meanwhile
            queue = self._creates if entry.mod_revision == 0 else self._updates
            queue[session] = queued_at
            moved = True
        return moved

    async def _flush_batch(self) -> bool:
        """Write one batch; False when etcd did not answer (the batch is queued again)."""
        batch = self._take()
        try:
            return await self._write_batch(batch)
        finally:
            for session, _, _ in batch:
                self._inflight.pop(session, None)

    async def _write_batch(self, batch: list[tuple[str, float, bool]]) -> bool:
        try:
            lease = await self.current_lease()
        except StoreError as exc:
            self._failed(batch, f"grant lease: {exc}")
            return False
        results = await asyncio.gather(
            *(self._write(session, lease) for session, _, _ in batch), return_exceptions=True
        )
        retry = [(b, r) for b, r in zip(batch, results, strict=True) if r is not None]
        for (session, queued_at, create), result in retry:
            self._requeue(session, queued_at, create)
            if isinstance(result, LeaseNotFound):
                self.lease_lost(lease)  # expired under us: the next batch grants a new one
            elif not isinstance(result, StoreError):
                log.error("pin_write_crashed", session=session, error=repr(result))
        if retry:
            self._failed([b for b, _ in retry], str(retry[0][1]))
            return False
        return True

    def _failed(self, batch: list[tuple[str, float, bool]], reason: str) -> None:
        for item in batch:
            self._requeue(*item)
        self.failures += len(batch)
        self._metrics.write_failures.inc(len(batch))
        log.warning("pin_write_failed", sessions=len(batch), pending=self.pending, error=reason)

    async def current_lease(self) -> int:
        """The lease new pin writes attach to, granted anew every refresh interval."""
        async with self._lease_lock:  # concurrent first turns must not grant one lease each
            now = time.monotonic()
            if not self.lease_id or now - self._lease_at >= self.refresh_s:
                self.lease_id = await self._store.grant_lease(self.lease_ttl)
                self._lease_at = now
                log.info("pin_lease_granted", lease_id=self.lease_id, ttl=self.lease_ttl)
            return self.lease_id

    def lease_lost(self, lease_id: int) -> None:
        """etcd no longer knows ``lease_id`` (it expired): the next write grants a new one."""
        if self.lease_id == lease_id:
            self.lease_id = 0

    async def _write(self, session: str, lease: int) -> BaseException | None:
        """One compare-and-swap; returns the error that warrants a retry, None when done."""
        entry = self._table.get(session)
        if entry is None or not entry.pending:
            return None
        source = entry.pin
        pin: Pin = source.touched(self._clock())
        if entry.notice_unwritten:
            pin = replace(pin, notified=True)
        expected = entry.mod_revision
        key = self._keyspace.pin(pin.agent, session)
        put = Put(key, pin.encode(), expected_mod_revision=expected, lease=lease)
        try:
            result = await self._store.txn([put])
        except CasConflict:
            return await self._reread(session, key, entry.pin, created=expected == 0)
        except StoreError as exc:
            return exc
        self.written += 1
        self._table.written(session, pin, expected, result.revision, lease, source)
        return None

    async def _reread(
        self, session: str, key: str, mine: Pin, *, created: bool
    ) -> BaseException | None:
        self.conflicts += 1
        self._metrics.conflicts.inc()
        try:
            kv = await self._store.get(key)
        except StoreUnavailable as exc:
            return exc
        if kv is None:
            self._table.lost(session)  # gone meanwhile (expired): create it again
            return None
        if self._table.adopt(kv, newer_only=True) and created:
            adopted = self._table.get(session)
            log.info(
                "pin_conflict_adopted",
                session=session,
                local_release=mine.release,
                release=adopted.pin.release if adopted else None,
            )
        return None

    def status(self) -> dict[str, Any]:
        age = self.oldest_pending_age()
        return {
            "cached": len(self._table),
            "pending": self.pending,
            "oldest_pending_age_s": None if age is None else round(age, 3),
            "failures": self.failures,
            "conflicts": self.conflicts,
            "dropped": self.dropped,
            "parked": len(self._parked),
            "written": self.written,
            "rejected": self._table.rejected,
            "lease_id": self.lease_id or None,
            "ttl_s": self.ttl,
            "lease_ttl_s": self.lease_ttl,
            "refresh_interval_s": self.refresh_s,
        }
