"""Saving a table of the sidecar's own records to a local file (pins, provider-state owners).

At most every ``interval`` while the table's version moves, and once more on close. The file
is encoded on the loop, a slice of rows at a time with the loop free in between, and written
atomically in a thread. (Encoding in a thread too held the GIL in pure Python for the whole
table -- 10,000 pins are tens of milliseconds -- and the loop waited up to a switch interval,
5 ms, each time it wanted it back.) A record's encoding is kept while the record stays the same
object, so a save re-encodes only what changed. A failed write is counted and logged, and the
next change tries again. ``load`` is for start-up: a missing, unreadable or rejected file is no
records, never a failed start.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Final, Generic, Protocol, TypeVar

import msgpack

from holdfast.background import BackgroundTask
from holdfast.logs import get_logger
from sidecar.config import write_atomically

log = get_logger(__name__)

SAVE_INTERVAL_S: Final = 2.0
ROWS_PER_SLICE: Final = 128  # encoded between two turns of the loop: well under a millisecond

E = TypeVar("E")
E_co = TypeVar("E_co", covariant=True)
Rec = TypeVar("Rec")


class SavedTable(Protocol[E_co]):
    @property
    def version(self) -> int: ...

    def entries(self) -> Iterable[E_co]: ...


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


class TableSaver(Generic[E, Rec]):
    """Saves the table's ``entries()`` as ``{"format", "saved_at", kind: [[record, *rest]]}``:
    ``row(entry)`` gives (record, *rest), ``encode_record(record)`` the record's bytes and
    ``key(record)`` what identifies it in the table."""

    def __init__(
        self,
        path: Path,
        table: SavedTable[E],
        row: Callable[[E], tuple[Rec, *tuple[Any, ...]]],
        *,
        encode_record: Callable[[Rec], bytes],
        key: Callable[[Rec], str],
        kind: str,
        file_format: int,
        interval: float = SAVE_INTERVAL_S,
    ) -> None:
        self.path = path
        self._table = table
        self._row = row
        self._encode_record = encode_record
        self._key = key
        self._kind = kind
        self._format = file_format
        self._interval = interval
        self._saved_version = table.version
        self._encoded: dict[str, tuple[Rec, bytes]] = {}
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
        entries = tuple(self._table.entries())
        data = await self.encode(entries)
        try:
            await asyncio.to_thread(write_atomically, self.path, data)
        except OSError as exc:
            self.failures += 1
            log.error(f"{self._kind}_save_failed", path=str(self.path), reason=str(exc))
            return
        self._saved_version = version
        log.debug(f"{self._kind}_saved", path=str(self.path), rows=len(entries))

    async def encode(self, entries: Sequence[E]) -> bytes:
        """The file's bytes, encoded a slice at a time with the loop free in between."""
        packer = msgpack.Packer(use_bin_type=True)
        parts = [
            packer.pack_map_header(3), packer.pack("format"), packer.pack(self._format),
            packer.pack("saved_at"), packer.pack(time.time()), packer.pack(self._kind),
            packer.pack_array_header(len(entries)),
        ]  # fmt: skip
        held, kept = self._encoded, {}
        for start in range(0, len(entries), ROWS_PER_SLICE):
            if start:
                await asyncio.sleep(0)
            for entry in entries[start : start + ROWS_PER_SLICE]:
                record, *rest = self._row(entry)
                key = self._key(record)
                cached = held.get(key)
                raw = (
                    cached[1]
                    if cached is not None and cached[0] is record
                    else self._encode_record(record)
                )
                kept[key] = (record, raw)
                parts.append(packer.pack([raw, *rest]))
        self._encoded = kept
        return b"".join(parts)

    async def close(self) -> None:
        self._stop.set()
        await self._task.join()
        await self.save()
