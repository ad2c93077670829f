"""Experiment outcomes to etcd: each experiment's counts under a key of the sidecar's own.

Not under a lease, unlike health: a report is evidence an operator decides on, so it must
outlive the sidecar that gathered it. The key is ``outcomes/<sidecar-id>/<experiment>`` and a
sidecar id is often stable across restarts (Kubernetes sets it to the pod name), so a restarted
sidecar must CONTINUE the key, never overwrite it with its fresh counts:

* before its first write for an experiment the publisher reads the key (the "base") and from
  then on writes base + its own counts since start, compare-and-swapped on the mod revision it
  read or last wrote;
* while etcd is away (at start too) nothing is written: feedback keeps accumulating locally
  and the base is read once etcd answers, so an outage never turns into an overwrite;
* a compare-and-swap conflict means someone else wrote the key (an earlier instance's last
  flush, or a second process misconfigured with the same id): every writer merges under CAS,
  so the key then holds what this one wrote too; the publisher re-reads it, takes out its own
  part, and merges again on the next beat.

Written only when the counts changed since the last successful write; close() makes one last
attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Final

from holdfast.background import BackgroundTask
from holdfast.experiments.series import Series, combine, series_of, subtract, to_records
from holdfast.keyspace import Keyspace, RecordError
from holdfast.keyspace.outcomes import OutcomeReport
from holdfast.logs import get_logger
from holdfast.store import CasConflict, Put, Store, StoreError
from sidecar.experiments.feedback import ExperimentBook

log = get_logger(__name__)

CLOSE_FLUSH_S: Final = 2.0


@dataclass(slots=True)
class KeyState:
    """What this sidecar knows of one experiment's key."""

    base: Series | None = None  # the key's counts not gathered by this process; None: unread
    revision: int = 0  # mod revision read or last written (0: the key does not exist)
    written: Series = field(default_factory=dict)  # own counts in the key as last written
    unreadable: bool = False


class OutcomePublisher:
    def __init__(
        self,
        store: Store,
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
        self.keys: dict[str, KeyState] = {}
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
        for name in self.book.experiments():
            state = self.keys.setdefault(name, KeyState())
            local = self.book.series(name)
            if state.base is not None and local == state.written:
                continue
            try:
                if state.base is None and not await self._read_base(name, state):
                    continue
                if await self._write(name, state, local):
                    written += 1
            except StoreError as exc:
                if not self._failing:
                    log.warning("outcomes_publish_failed", error=str(exc))
                self._failing = True
                return written
            if self._failing:
                log.info("outcomes_publish_resumed")
                self._failing = False
        return written

    async def _read_base(self, name: str, state: KeyState) -> bool:
        kv = await self.store.get(self.keyspace.outcome(name, self.sidecar_id))
        if kv is None:
            state.base, state.revision = subtract({}, state.written), 0
            return True
        try:
            stored = series_of(OutcomeReport.decode(kv.value))
        except RecordError as exc:
            if not state.unreadable:  # evidence: never overwritten, the report counts it
                log.error("outcomes_key_unreadable", experiment=name, error=str(exc))
            state.unreadable = True
            return False
        state.unreadable = False
        state.base, state.revision = subtract(stored, state.written), kv.mod_revision
        if state.base and not state.written:
            log.info("outcomes_continued", experiment=name, series=len(state.base))
        return True

    async def _write(self, name: str, state: KeyState, local: Series) -> bool:
        merged = combine(state.base or {}, local)
        try:
            report = OutcomeReport(
                experiment=name,
                sidecar_id=self.sidecar_id,
                at=time.time(),
                counts=tuple(to_records(name, merged.items())),
            )
        except RecordError as exc:
            log.error("outcomes_report_invalid", experiment=name, error=str(exc))
            return False
        key = self.keyspace.outcome(name, self.sidecar_id)
        try:
            result = await self.store.txn([Put(key, report.encode(), state.revision)])
        except CasConflict as exc:
            log.warning(
                "outcomes_key_contended",
                experiment=name,
                expected=exc.expected_mod_revision,
                actual=exc.actual_mod_revision,
            )
            state.base = None  # re-read next time: the key holds someone else's write
            return False
        state.revision, state.written = result.revision, local
        return True
