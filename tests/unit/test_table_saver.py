"""The pin and state files are encoded a slice of rows at a time on the loop, re-encoding only
the records that changed, and read back as they were written."""

from __future__ import annotations

import asyncio
from pathlib import Path

from holdfast.keyspace import Keyspace, Pin, StateOwner
from sidecar.pins import persist as pin_persist
from sidecar.pins import state_persist
from sidecar.pins.persist import PinSaver
from sidecar.pins.saver import ROWS_PER_SLICE
from sidecar.pins.state_persist import StateSaver
from sidecar.pins.states import StateTable
from sidecar.pins.table import PinTable

AGENT = "bot"


def pin(session: str, release: str = "r1") -> Pin:
    return Pin(agent=AGENT, session=session, release=release, pinned_at=1.0, revision=2,
               touched_at=1.0)  # fmt: skip


def test_a_large_pin_table_is_saved_in_slices_and_reads_back(tmp_path: Path) -> None:
    table = PinTable(Keyspace("t"), AGENT)
    saver = PinSaver(tmp_path / "pins.msgpack", table)  # saves what changes from now on
    count = 3 * ROWS_PER_SLICE + 5
    for i in range(count):
        table.record_new(pin(f"s{i}"))
    encoded: list[str] = []
    plain = saver._encode_record

    def counted(record: Pin) -> bytes:
        encoded.append(record.session)
        return plain(record)

    saver._encode_record = counted

    async def run() -> int:
        turns = 0

        async def other() -> None:  # what else the loop serves meanwhile
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(other())
        await asyncio.sleep(0)
        await saver.save()
        task.cancel()
        return turns

    turns = asyncio.run(run())
    assert turns >= count // ROWS_PER_SLICE  # the loop ran between the slices
    loaded = pin_persist.load(saver.path)
    assert [e.pin for e in loaded] == [e.pin for _, e in table.entries()]
    assert [e.pending for e in loaded] == [e.pending for _, e in table.entries()]
    assert len(encoded) == count

    # one pin changes: only it is encoded again, and the file has the change
    encoded.clear()
    table.record_new(pin("s7", "r2"))
    asyncio.run(saver.save())
    assert encoded == ["s7"]
    by_session = {e.pin.session: e.pin for e in pin_persist.load(saver.path)}
    assert by_session["s7"].release == "r2" and len(by_session) == count


def test_the_state_file_reads_back(tmp_path: Path) -> None:
    table = StateTable(Keyspace("t"), AGENT)
    owners = [
        StateOwner(
            agent=AGENT, id=f"resp_{i}", kind="response", release="r1", session="s", issued_at=1.0
        )
        for i in range(ROWS_PER_SLICE + 3)
    ]
    saver = StateSaver(tmp_path / "states.msgpack", table)
    for owner in owners:
        table.record(owner)
    asyncio.run(saver.save())
    loaded = state_persist.load(saver.path)
    assert sorted(e.owner.id for e in loaded) == sorted(o.id for o in owners)
