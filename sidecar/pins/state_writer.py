"""Takes the state table's pending records to etcd, in the background, whatever etcd's state.

One small record per response id, so the etcd cost per response is what matters: records go in
batches of up to ``BATCH`` puts (and deletes) in one transaction, as many as queued while the
previous batch was in flight, and attach to the pin writer's current lease -- no lease of their
own, no keep-alive, no compare: an id is issued once, by one provider, and a refresh racing
another sidecar's refresh writes the same record. While etcd is away the writes queue (bounded
by ``max_pending``, the oldest dropped first and kept locally, parked until the queue drains)
and the table on disk keeps them across a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from typing import Any, Final

from holdfast.background import BackgroundTask
from holdfast.keyspace import Keyspace, StateOwner
from holdfast.logs import get_logger
from holdfast.store import Put, Store
from holdfast.store.errors import LeaseNotFound, StoreError
from sidecar.pins.states import StateTable
from sidecar.pins.writer import PinWriter

log = get_logger(__name__)

BATCH: Final = 64  # well under etcd's default --max-txn-ops (128)
RETRY_INITIAL_S: Final = 0.2
RETRY_MAX_S: Final = 5.0
CLOSE_FLUSH_S: Final = 2.0


class StateWriter:
    def __init__(
        self,
        store: Store,
        table: StateTable,
        keyspace: Keyspace,
        leases: PinWriter,
        *,
        max_pending: int,
        retry_initial: float = RETRY_INITIAL_S,
        retry_max: float = RETRY_MAX_S,
    ) -> None:
        self._store = store
        self._table = table
        self._keyspace = keyspace
        self._leases = leases
        self.max_pending = max_pending
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._queue: OrderedDict[str, float] = OrderedDict()  # id -> when queued (monotonic)
        self._parked: OrderedDict[str, float] = OrderedDict()  # dropped, still owed to etcd
        self._inflight = 0
        self._wake = asyncio.Event()
        self._task = BackgroundTask("state writer")
        self.written = 0
        self.batches = 0
        self.failures = 0
        self.dropped = 0
        table.on_pending(self.enqueue)

    @property
    def pending(self) -> int:
        """Records owed to etcd: queued, or in the transaction being written."""
        return len(self._queue) + self._inflight

    def enqueue(self, state_id: str) -> None:
        queued = self._parked.pop(state_id, None) or time.monotonic()
        self._queue.setdefault(state_id, queued)
        while len(self._queue) > self.max_pending:
            dropped, at = self._queue.popitem(last=False)
            self._parked[dropped] = at
            self.dropped += 1
            log.warning("state_write_dropped", id=dropped, limit=self.max_pending)
        self._wake.set()

    async def start(self) -> None:
        self._task.start(self._run)

    async def close(self, *, flush_timeout: float = CLOSE_FLUSH_S) -> None:
        await self._task.cancel()
        if self._queue and flush_timeout > 0:
            # What etcd does not get now stays pending in the saved table for the next start.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(flush_timeout):
                    while self._queue and await self._flush_batch():
                        pass

    async def _run(self) -> None:
        delay = self._retry_initial
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue or self._unpark():
                if await self._flush_batch():
                    delay = self._retry_initial
                    continue
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)

    def _unpark(self) -> bool:
        moved = False
        while self._parked and len(self._queue) < self.max_pending:
            state_id, at = self._parked.popitem(last=False)
            entry = self._table.entry(state_id)
            if entry is not None and entry.pending:
                self._queue[state_id] = at
                moved = True
        return moved

    async def _flush_batch(self) -> bool:
        """Write one batch in one transaction; False when etcd did not take it (queued again)."""
        batch: list[tuple[str, float, StateOwner, bool]] = []
        while self._queue and len(batch) < BATCH:
            state_id, at = self._queue.popitem(last=False)
            entry = self._table.entry(state_id)
            if entry is not None and entry.pending:
                batch.append((state_id, at, entry.owner, entry.deleted))
        if not batch:
            return True
        self._inflight = len(batch)
        try:
            lease = await self._leases.current_lease()
            puts = [
                Put(self._keyspace.state_owner(o.agent, i), o.encode(), lease=lease)
                for i, _, o, deleted in batch
                if not deleted
            ]
            deletes = [self._keyspace.state_owner(o.agent, i) for i, _, o, d in batch if d]
            result = await self._store.txn(puts, deletes)
        except StoreError as exc:
            if isinstance(exc, LeaseNotFound):
                self._leases.lease_lost(self._leases.lease_id)
            for state_id, at, _, _ in reversed(batch):
                if state_id not in self._queue:
                    self._queue[state_id] = at
                    self._queue.move_to_end(state_id, last=False)
            self.failures += 1
            log.warning("state_write_failed", records=len(batch), error=str(exc))
            return False
        finally:
            self._inflight = 0
        for state_id, _, owner, deleted in batch:
            self._table.written(state_id, owner, deleted, result.revision, lease)
        self.written += len(batch)
        self.batches += 1
        return True

    def status(self) -> dict[str, Any]:
        return {
            "cached": len(self._table),
            "pending": self.pending,
            "parked": len(self._parked),
            "written": self.written,
            "batches": self.batches,
            "failures": self.failures,
            "dropped": self.dropped,
            "rejected": self._table.rejected,
        }
