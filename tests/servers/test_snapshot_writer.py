"""The last-known-good snapshot writer: a burst of config changes is saved once, the newest
last, and closing saves what is pending at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from holdfast.store import KeyValue
from sidecar.config import persist


def kvs(n: int) -> dict[str, KeyValue]:
    key = "/holdfast/dev/routes/support"
    return {key: KeyValue(key, f"v{n}".encode(), n, 1, n)}


async def test_a_burst_is_saved_once_with_the_newest_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[int] = []
    real = persist.write_atomically

    def counting(path: Path, data: bytes) -> None:
        writes.append(persist.decode(data).revision)
        real(path, data)

    monkeypatch.setattr(persist, "write_atomically", counting)
    writer = persist.SnapshotWriter(tmp_path / "snap", delay=0.2)
    for revision in range(1, 21):
        writer.submit(revision, kvs(revision))
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.4)
    assert writes == [20]
    saved = persist.load(tmp_path / "snap")
    assert saved is not None and saved.revision == 20 and writer.saved_revision == 20

    writer.submit(21, kvs(21))
    started = asyncio.get_running_loop().time()
    await writer.close()  # no waiting out the delay on the way out
    assert writes == [20, 21] and asyncio.get_running_loop().time() - started < 0.15
