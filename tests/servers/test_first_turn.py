"""A session's first turn goes out at once on this sidecar's decision while etcd settles the pin
(sidecar.pins.pinning.Pinning.speculate): the agent sees nothing until etcd has spoken, and when
another sidecar pinned the session first, to another release, the answer is dropped and the
request served again there. Against the real fake upstream; the pin store is MemoryStore."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from holdfast.keyspace import Pin
from holdfast.store import Put
from holdfast.store.memory import MemoryStore
from holdfast_devtools import procs
from tests.servers import conftest
from tests.servers.conftest import AGENT, KS, SidecarUnderTest

MESSAGES = [{"role": "user", "content": "hello"}]


async def started(fakellm: procs.ManagedProcess, store: MemoryStore) -> SidecarUnderTest:
    async with aiohttp.ClientSession() as http:
        await http.post(f"{fakellm.url}/_control/reset")
    sut = await conftest.start_sidecar(fakellm.url, pin_store=store)
    sut.add_release("r1", "model-one")
    sut.add_release("r2", "model-two")
    sut.set_stable("r2")  # this sidecar routes new sessions to r2
    return sut


async def pinned_elsewhere(store: MemoryStore, session: str, release: str) -> None:
    """What another sidecar did a moment ago: the session's pin, which this one has not seen."""
    now = time.time()
    pin = Pin(agent=AGENT, session=session, release=release, pinned_at=now, revision=1,
              touched_at=now)  # fmt: skip
    lease = await store.grant_lease(60)
    await store.txn([Put(KS.pin(AGENT, session), pin.encode(), 0, lease)])


async def models_seen(fakellm: procs.ManagedProcess) -> list[str]:
    async with aiohttp.ClientSession() as http, http.get(f"{fakellm.url}/_control/requests") as r:
        log: dict[str, Any] = await r.json()
    return [entry["body"]["model"] for entry in log["requests"]]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_first_turn_settled_elsewhere_is_served_there_and_nothing_else_is_seen(
    fakellm: procs.ManagedProcess, stream: bool
) -> None:
    store = MemoryStore()
    await pinned_elsewhere(store, "conv", "r1")
    sut = await started(fakellm, store)
    try:
        async with aiohttp.ClientSession() as http:
            body = {"model": AGENT, "messages": MESSAGES, "stream": stream}
            headers = {"X-Holdfast-Session": "conv"}
            async with http.post(f"{sut.url}/v1/chat/completions", json=body,
                                 headers=headers) as resp:  # fmt: skip
                assert resp.status == 200
                assert resp.headers["X-Holdfast-Release"] == "r1"
                text = await resp.text()
        assert "model-one" in text and "model-two" not in text  # only r1's answer reached it
        # r2 was asked at once (speculation) and its answer dropped; r1 served the turn
        assert sorted(await models_seen(fakellm)) == ["model-one", "model-two"]
        entry = sut.pins.get("conv")
        assert entry is not None and entry.pin.release == "r1"
        # one request, as the agent saw it, in the metrics and the signals
        async with aiohttp.ClientSession() as http, http.get(f"{sut.url}/status") as r:
            status = await r.json()
        assert status["requests"]["total"] == 1
        assert list(status["signals"]["releases"]) == ["r1"]
    finally:
        await sut.server.close()


async def test_a_first_turn_etcd_agrees_with_costs_one_provider_call(
    fakellm: procs.ManagedProcess,
) -> None:
    store = MemoryStore()
    sut = await started(fakellm, store)
    try:
        async with aiohttp.ClientSession() as http:
            for turn in range(2):
                body = {"model": AGENT, "messages": MESSAGES}
                headers = {"X-Holdfast-Session": "fresh"}
                async with http.post(f"{sut.url}/v1/chat/completions", json=body,
                                     headers=headers) as resp:  # fmt: skip
                    assert resp.status == 200, turn
                    assert resp.headers["X-Holdfast-Release"] == "r2"
        assert await models_seen(fakellm) == ["model-two", "model-two"]
        stored = await store.get(KS.pin(AGENT, "fresh"))
        assert stored is not None and Pin.decode(stored.value).release == "r2"  # claimed in etcd
    finally:
        await sut.server.close()
