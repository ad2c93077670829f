"""The last-known-good configuration on disk, so a restart during an etcd outage still serves.

Written atomically (temp file, fsync, rename, fsync of the directory) in a worker thread so the
event loop never waits on the disk; a torn or foreign file is ignored with a logged reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgpack

from holdfast.keyspace import MAX_RECORD_BYTES
from holdfast.logs import get_logger
from holdfast.store import KeyValue

log = get_logger(__name__)

FORMAT: Final = 1
# A burst of changes is saved once, this long after its first: each save fsyncs, and a whole
# fleet of sidecars saving at the moment a change lands competes with applying the next one.
# A crash inside the delay restarts (during an outage) from the snapshot before the burst.
SAVE_DELAY_S: Final = 0.25
MAX_SNAPSHOT_BYTES: Final = 64 * MAX_RECORD_BYTES


@dataclass(frozen=True, slots=True)
class SavedSnapshot:
    revision: int
    saved_at: float
    kvs: dict[str, KeyValue]


def snapshot_path(state_dir: Path, env: str, agent: str) -> Path:
    return state_dir / f"config-{env}-{agent}.msgpack"


def encode(revision: int, kvs: Mapping[str, KeyValue]) -> bytes:
    rows = [
        [kv.key, kv.value, kv.mod_revision, kv.create_revision, kv.version] for kv in kvs.values()
    ]
    body = {"format": FORMAT, "revision": revision, "saved_at": time.time(), "kvs": rows}
    data: bytes = msgpack.packb(body, use_bin_type=True)
    return data


def decode(data: bytes) -> SavedSnapshot:
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise ValueError(f"snapshot is {len(data)} bytes, over {MAX_SNAPSHOT_BYTES}")
    try:
        body: Any = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # any msgpack failure means the file is unusable
        raise ValueError(f"not a msgpack snapshot: {exc}") from exc
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ValueError("unknown snapshot format")
    revision, saved_at, rows = body.get("revision"), body.get("saved_at"), body.get("kvs")
    if (
        not isinstance(revision, int)
        or not isinstance(saved_at, float)
        or not isinstance(rows, list)
    ):
        raise ValueError("snapshot header is malformed")
    kvs: dict[str, KeyValue] = {}
    for row in rows:
        match row:
            case [str(key), bytes(value), int(mod), int(create), int(version)]:
                kvs[key] = KeyValue(key, value, mod, create, version)
            case _:
                raise ValueError("snapshot row is malformed")
    return SavedSnapshot(revision=revision, saved_at=saved_at, kvs=kvs)


def _save(path: Path, revision: int, kvs: Mapping[str, KeyValue]) -> None:
    write_atomically(path, encode(revision, kvs))


def write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load(path: Path) -> SavedSnapshot | None:
    """Read the saved snapshot (start-up only, before the loop serves), or None."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.warning("snapshot_unreadable", path=str(path), reason=str(exc))
        return None
    try:
        return decode(data)
    except ValueError as exc:
        log.warning("snapshot_rejected", path=str(path), reason=str(exc))
        return None


class SnapshotWriter:
    """Coalesces saves: at most one write in flight, the newest state always written last."""

    def __init__(self, path: Path, *, delay: float = SAVE_DELAY_S) -> None:
        self.path = path
        self.delay = delay
        self._pending: tuple[int, Mapping[str, KeyValue]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._now = asyncio.Event()  # close: save what is pending without waiting
        self.saved_revision = 0
        self.failures = 0

    def submit(self, revision: int, kvs: Mapping[str, KeyValue]) -> None:
        self._pending = (revision, kvs)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._pending is not None:
            if self.delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._now.wait(), self.delay)
            revision, kvs = self._pending
            self._pending = None
            try:
                # Encoding a large config is milliseconds of CPU: in the thread too, off the
                # loop (each snapshot's mapping is its own and never changes afterwards).
                await asyncio.to_thread(_save, self.path, revision, kvs)
            except OSError as exc:
                self.failures += 1
                log.error("snapshot_write_failed", path=str(self.path), reason=str(exc))
            else:
                self.saved_revision = revision
                log.debug("snapshot_saved", path=str(self.path), revision=revision)

    async def close(self) -> None:
        self._now.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
