"""The state table on disk, beside the pin table: a restart during an etcd outage still sends
every continuation to the release that issued its id, and writes etcd never got are still made.

Saved atomically at most every ``interval`` while the table changes, and once more on close;
encoded in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any, Final

import msgpack

from holdfast.background import BackgroundTask
from holdfast.keyspace import RecordError, StateOwner
from holdfast.logs import get_logger
from sidecar.config import write_atomically
from sidecar.pins.persist import MAX_PINS_FILE_BYTES, SAVE_INTERVAL_S
from sidecar.pins.states import StateEntry, StateTable

log = get_logger(__name__)

FORMAT: Final = 1

Row = tuple[StateOwner, int, int, bool, bool]


def states_path(state_dir: Path, env: str, agent: str) -> Path:
    return state_dir / f"states-{env}-{agent}.msgpack"


def encode(rows: list[Row]) -> bytes:
    body = {
        "format": FORMAT,
        "saved_at": time.time(),
        "states": [[owner.encode(), *rest] for owner, *rest in rows],
    }
    data: bytes = msgpack.packb(body, use_bin_type=True)
    return data


def decode(data: bytes) -> list[StateEntry]:
    if len(data) > MAX_PINS_FILE_BYTES:
        raise ValueError(f"state file is {len(data)} bytes, over {MAX_PINS_FILE_BYTES}")
    try:
        body: Any = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # any msgpack failure means the file is unusable
        raise ValueError(f"not a msgpack state file: {exc}") from exc
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ValueError("unknown state file format")
    rows = body.get("states")
    if not isinstance(rows, list):
        raise ValueError("state file has no record list")
    entries: list[StateEntry] = []
    for row in rows:
        match row:
            case [bytes(raw), int(mod), int(lease), bool(pending), bool(deleted)]:
                try:
                    owner = StateOwner.decode(raw)
                except RecordError as exc:
                    raise ValueError(f"state file holds a bad record: {exc}") from exc
                entries.append(
                    StateEntry(
                        owner=owner, mod_revision=mod, lease=lease, pending=pending, deleted=deleted
                    )
                )
            case _:
                raise ValueError("state file row is malformed")
    return entries


def load(path: Path) -> list[StateEntry]:
    """The saved records (start-up only); [] when there are none or the file is unusable."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        log.warning("states_file_unreadable", path=str(path), reason=str(exc))
        return []
    try:
        return decode(data)
    except ValueError as exc:
        log.warning("states_file_rejected", path=str(path), reason=str(exc))
        return []


class StateSaver:
    def __init__(self, path: Path, table: StateTable, *, interval: float = SAVE_INTERVAL_S) -> None:
        self.path = path
        self._table = table
        self._interval = interval
        self._saved_version = table.version
        self._task = BackgroundTask("state saver")
        self._stop = asyncio.Event()
        self.failures = 0

    async def start(self) -> None:
        self._task.start(self._run)

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)
            await self.save()

    async def save(self) -> None:
        version = self._table.version
        if version == self._saved_version:
            return
        rows: list[Row] = [
            (e.owner, e.mod_revision, e.lease, e.pending, e.deleted)
            for _, e in self._table.entries()
        ]
        try:
            await asyncio.to_thread(lambda: write_atomically(self.path, encode(rows)))
        except OSError as exc:
            self.failures += 1
            log.error("states_save_failed", path=str(self.path), reason=str(exc))
            return
        self._saved_version = version

    async def close(self) -> None:
        self._stop.set()
        await self._task.join()
        await self.save()
