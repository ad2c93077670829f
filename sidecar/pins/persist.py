"""The pin table on disk, so a restart (even during an etcd outage) keeps every session where
it was, and writes that etcd never got are still made.

Saved atomically with the snapshot's helpers, at most every ``interval`` while the table
changes, and once more on close. The encoding runs in a worker thread: a large table must not
stall the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any, Final

import msgpack

from holdfast.background import BackgroundTask
from holdfast.keyspace import Pin, RecordError
from holdfast.logs import get_logger
from sidecar.config import write_atomically
from sidecar.pins.table import PinEntry, PinTable

log = get_logger(__name__)

FORMAT: Final = 1
SAVE_INTERVAL_S: Final = 2.0
MAX_PINS_FILE_BYTES: Final = 512 * 1024 * 1024

Row = tuple[Pin, int, int, float, bool]


def pins_path(state_dir: Path, env: str, agent: str) -> Path:
    return state_dir / f"pins-{env}-{agent}.msgpack"


def encode(rows: list[Row]) -> bytes:
    body = {
        "format": FORMAT,
        "saved_at": time.time(),
        "pins": [[pin.encode(), *rest] for pin, *rest in rows],
    }
    data: bytes = msgpack.packb(body, use_bin_type=True)
    return data


def decode(data: bytes) -> list[PinEntry]:
    if len(data) > MAX_PINS_FILE_BYTES:
        raise ValueError(f"pin file is {len(data)} bytes, over {MAX_PINS_FILE_BYTES}")
    try:
        body: Any = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # any msgpack failure means the file is unusable
        raise ValueError(f"not a msgpack pin file: {exc}") from exc
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ValueError("unknown pin file format")
    rows = body.get("pins")
    if not isinstance(rows, list):
        raise ValueError("pin file has no pin list")
    entries: list[PinEntry] = []
    for row in rows:
        match row:
            case [bytes(raw), int(mod), int(lease), int() | float() as told, bool(pending)]:
                try:
                    pin = Pin.decode(raw)
                except RecordError as exc:
                    raise ValueError(f"pin file holds a bad pin: {exc}") from exc
                entries.append(
                    PinEntry(pin=pin, mod_revision=mod, lease=lease, told=told, pending=pending)
                )
            case _:
                raise ValueError("pin file row is malformed")
    return entries


def load(path: Path) -> list[PinEntry]:
    """Read the saved pins (start-up only, before the loop serves); [] when there are none."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("pins_file_unreadable", path=str(path), reason=str(exc))
        return []
    try:
        return decode(data)
    except ValueError as exc:
        log.warning("pins_file_rejected", path=str(path), reason=str(exc))
        return []


class PinSaver:
    def __init__(self, path: Path, table: PinTable, *, interval: float = SAVE_INTERVAL_S) -> None:
        self.path = path
        self._table = table
        self._interval = interval
        self._saved_version = table.version
        self._task = BackgroundTask("pin saver")
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
        # Copy on the loop (cheap), encode and write in a thread (not cheap for large tables).
        rows: list[Row] = [
            (e.pin, e.mod_revision, e.lease, e.told, e.pending) for _, e in self._table.entries()
        ]
        try:
            await asyncio.to_thread(lambda: write_atomically(self.path, encode(rows)))
        except OSError as exc:
            self.failures += 1
            log.error("pins_save_failed", path=str(self.path), reason=str(exc))
            return
        self._saved_version = version
        log.debug("pins_saved", path=str(self.path), pins=len(rows))

    async def close(self) -> None:
        self._stop.set()
        await self._task.join()
        await self.save()
