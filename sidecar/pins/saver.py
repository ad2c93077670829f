"""Saving a table of the sidecar's own records to a local file (pins, provider-state owners).

At most every ``interval`` while the table's version moves, and once more on close; the rows
are copied on the loop (cheap) and encoded and written atomically in a thread (not cheap for a
large table). A failed write is counted and logged, and the next change tries again. ``load``
is for start-up: a missing, unreadable or rejected file is no records, never a failed start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Final, Generic, Protocol, TypeVar

from holdfast.background import BackgroundTask
from holdfast.logs import get_logger
from sidecar.config import write_atomically

log = get_logger(__name__)

SAVE_INTERVAL_S: Final = 2.0

R = TypeVar("R")
E = TypeVar("E")


class Versioned(Protocol):
    @property
    def version(self) -> int: ...


def load_table(path: Path, decode: Callable[[bytes], list[E]], kind: str) -> list[E]:
    """The saved records of ``kind`` (``pins``, ``states``); [] when there are none or the file
    is unusable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning(f"{kind}_file_unreadable", path=str(path), reason=str(exc))
        return []
    try:
        return decode(data)
    except ValueError as exc:
        log.warning(f"{kind}_file_rejected", path=str(path), reason=str(exc))
        return []


class TableSaver(Generic[R]):
    def __init__(
        self,
        path: Path,
        table: Versioned,
        rows: Callable[[], list[R]],
        encode: Callable[[list[R]], bytes],
        *,
        kind: str,
        interval: float = SAVE_INTERVAL_S,
    ) -> None:
        self.path = path
        self._table = table
        self._rows = rows
        self._encode = encode
        self._kind = kind
        self._interval = interval
        self._saved_version = table.version
        self._task = BackgroundTask(f"{kind} saver")
        self._stop = asyncio.Event()
        self.failures = 0

    async def start(self) -> None:
        self._task.start(self._run)

    async def _run(self) -> None:
        # Stopped by an event, never cancelled: a write cut short would race the final one.
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)
            await self.save()

    async def save(self) -> None:
        version = self._table.version
        if version == self._saved_version:
            return
        rows = self._rows()
        try:
            await asyncio.to_thread(lambda: write_atomically(self.path, self._encode(rows)))
        except OSError as exc:
            self.failures += 1
            log.error(f"{self._kind}_save_failed", path=str(self.path), reason=str(exc))
            return
        self._saved_version = version
        log.debug(f"{self._kind}_saved", path=str(self.path), rows=len(rows))

    async def close(self) -> None:
        self._stop.set()
        await self._task.join()
        await self.save()
