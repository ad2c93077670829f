"""Experiment outcomes to etcd: each experiment's cumulative counts under a key of their own.

Not under a lease, unlike health: a report is evidence an operator decides on, so it must
outlive the sidecar that gathered it. Written only when the counts changed since the last
successful write; when etcd is away the next beat retries, and close() makes one last attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from typing import Final

from holdfast.background import BackgroundTask
from holdfast.keyspace import Keyspace
from holdfast.keyspace.outcomes import OutcomeCounts, OutcomeReport
from holdfast.logs import get_logger
from holdfast.store import StoreError
from holdfast.store.etcd import EtcdStore
from sidecar.feedback import ExperimentBook

log = get_logger(__name__)

CLOSE_FLUSH_S: Final = 2.0


def by_experiment(counts: tuple[OutcomeCounts, ...]) -> dict[str, tuple[OutcomeCounts, ...]]:
    grouped: dict[str, list[OutcomeCounts]] = defaultdict(list)
    for c in counts:
        grouped[c.experiment].append(c)
    return {name: tuple(items) for name, items in grouped.items()}


class OutcomePublisher:
    def __init__(
        self,
        store: EtcdStore,
        keyspace: Keyspace,
        book: ExperimentBook,
        *,
        sidecar_id: str,
        interval: float,
    ) -> None:
        self.store = store
        self.keyspace = keyspace
        self.book = book
        self.sidecar_id = sidecar_id
        self.interval = interval
        self._written: dict[str, tuple[OutcomeCounts, ...]] = {}
        self._task = BackgroundTask("outcome publisher")
        self._failing = False

    async def start(self) -> None:
        self._task.start(self._run)

    async def close(self) -> None:
        await self._task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.publish(), CLOSE_FLUSH_S)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.publish()

    async def publish(self) -> int:
        """Write every experiment whose counts changed; returns how many were written."""
        written = 0
        for name, counts in by_experiment(self.book.outcomes()).items():
            if self._written.get(name) == counts:
                continue
            report = OutcomeReport(
                experiment=name, sidecar_id=self.sidecar_id, at=time.time(), counts=counts
            )
            try:
                await self.store.put(self.keyspace.outcome(name, self.sidecar_id), report.encode())
            except StoreError as exc:
                if not self._failing:
                    log.warning("outcomes_publish_failed", error=str(exc))
                self._failing = True
                return written
            if self._failing:
                log.info("outcomes_publish_resumed")
                self._failing = False
            self._written[name] = counts
            written += 1
        return written
