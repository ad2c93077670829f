"""The state table on disk, beside the pin table: a restart during an etcd outage still sends
every continuation to the release that issued its id, and writes etcd never got are still made.

Saved atomically at most every ``interval`` while the table changes, and once more on close;
encoded in a worker thread.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

import msgpack

from holdfast.keyspace import RecordError, StateOwner
from sidecar.pins.persist import MAX_PINS_FILE_BYTES
from sidecar.pins.saver import SAVE_INTERVAL_S, TableSaver, load_table
from sidecar.pins.states import StateEntry, StateTable

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
    return load_table(path, decode, "states")


class StateSaver(TableSaver[tuple[str, StateEntry], StateOwner]):
    def __init__(self, path: Path, table: StateTable, *, interval: float = SAVE_INTERVAL_S) -> None:
        def row(item: tuple[str, StateEntry]) -> Row:
            e = item[1]
            return (e.owner, e.mod_revision, e.lease, e.pending, e.deleted)

        super().__init__(
            path, table, row,
            encode_record=StateOwner.encode, key=lambda owner: f"{owner.kind}/{owner.id}",
            kind="states", file_format=FORMAT, interval=interval,
        )  # fmt: skip
