"""The pin table on disk, so a restart (even during an etcd outage) keeps every session where
it was, and writes that etcd never got are still made.

Saved atomically with the snapshot's helpers, at most every ``interval`` while the table
changes, and once more on close (``sidecar.pins.saver``: encoded a slice at a time, so a large
table does not stall the event loop).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

import msgpack

from holdfast.keyspace import Pin, RecordError
from sidecar.pins.saver import SAVE_INTERVAL_S, TableSaver, load_table
from sidecar.pins.table import PinEntry, PinTable

FORMAT: Final = 1
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
    return load_table(path, decode, "pins")


class PinSaver(TableSaver[tuple[str, PinEntry], Pin]):
    def __init__(self, path: Path, table: PinTable, *, interval: float = SAVE_INTERVAL_S) -> None:
        def row(item: tuple[str, PinEntry]) -> Row:
            e = item[1]
            return (e.pin, e.mod_revision, e.lease, e.told, e.pending)

        super().__init__(
            path, table, row,
            encode_record=Pin.encode, key=lambda pin: pin.session,
            kind="pins", file_format=FORMAT, interval=interval,
        )  # fmt: skip
