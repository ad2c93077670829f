"""Tier 3: session pins through real sidecar processes, real etcd (one node, a cluster, outages)."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openai import AsyncOpenAI

from holdfast.devtools import procs
from holdfast.devtools.etcd_local import EtcdCluster, EtcdNode
from holdfast.keyspace import Keyspace, Pin
from holdfast.store import Put
from holdfast.store.etcd import EtcdStore
from tests.etcd.spine_stack import AGENT, Stack, get_json, stable_is, start_stack, wait_for

pytestmark = pytest.mark.etcd


def make_stack(base: Path, env: str, etcd: Sequence[str]) -> Stack:
    stack = start_stack(base, env, etcd)
    stack.create_releases(("r1", "model-one"), ("r2", "model-two"))
    stack.ctl("route", "set-stable", AGENT, "r1")
    return stack


@pytest.fixture
def stack(tmp_path: Path, etcd_node: EtcdNode, etcd_env: str) -> Iterator[Stack]:
    s = make_stack(tmp_path, etcd_env, [etcd_node.client_url])
    yield s
    s.stop()


async def chat(url: str, session: str) -> tuple[str, str | None]:
    """One turn; returns the serving release and the migrated-from header, if any."""
    body = {"model": AGENT, "messages": [{"role": "user", "content": f"turn of {session}"}]}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        async with http.post(
            f"{url}/v1/chat/completions", json=body, headers={"X-Holdfast-Session": session}
        ) as resp:
            assert resp.status == 200, await resp.text()
            reply = (await resp.json())["choices"][0]["message"]["content"]
            release = resp.headers["X-Holdfast-Release"]
            assert reply.startswith(f"[model-{'one' if release == 'r1' else 'two'}]")
            return release, resp.headers.get("X-Holdfast-Migrated-From")


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out: {what}")


async def stored_pin(store: EtcdStore, env: str, session: str) -> Pin | None:
    kv = await store.get(Keyspace(env).pin(AGENT, session))
    return Pin.decode(kv.value) if kv is not None else None


async def settled(side: procs.ManagedProcess, release: str) -> None:
    await wait_for(f"{side.url}/status", stable_is(release))


async def test_pin_made_on_one_sidecar_holds_on_another_and_migration_is_told_once(
    stack: Stack, store: EtcdStore, etcd_node: EtcdNode
) -> None:
    one = stack.start_sidecar([etcd_node.client_url], name="one")
    two = stack.start_sidecar([etcd_node.client_url], name="two")
    for side in (one, two):
        await settled(side, "r1")
    client = AsyncOpenAI(base_url=f"{one.url}/v1", api_key="unused", max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model=AGENT,
        messages=[{"role": "user", "content": "hello"}],
        extra_headers={"X-Holdfast-Session": "conv-a"},
    )
    await client.close()
    assert raw.headers["X-Holdfast-Release"] == "r1"
    pin = await until(lambda: stored_pin(store, stack.env, "conv-a"), "conv-a pinned in etcd")
    assert (pin.release, pin.agent) == ("r1", AGENT)
    kv = await store.get(Keyspace(stack.env).pin(AGENT, "conv-a"))
    assert kv is not None and kv.lease != 0  # pins live under a lease

    stack.ctl("route", "set-stable", AGENT, "r2")
    await settled(two, "r2")
    assert await chat(two.url, "conv-a") == ("r1", None)
    assert await chat(two.url, "conv-b") == ("r2", None)

    # What configsvc's `pins migrate` does: rewrite the pin as migrated, on its lease.
    migrated = Pin.decode(kv.value).migrated("r2", actor="ops", now=time.time())
    key = Keyspace(stack.env).pin(AGENT, "conv-a")
    result = await store.txn([Put(key, migrated.encode(), kv.mod_revision, kv.lease)])
    await wait_for(f"{two.url}/status", lambda b: b["etcd"]["watch_revision"] >= result.revision)
    assert await chat(two.url, "conv-a") == ("r2", "r1")
    assert await chat(two.url, "conv-a") == ("r2", None)
    notified = await until(
        lambda: _notified(store, stack.env, "conv-a"), "the notice is acknowledged in etcd"
    )
    assert notified.release == "r2" and notified.migrated_from == "r1"


async def _notified(store: EtcdStore, env: str, session: str) -> Pin | None:
    pin = await stored_pin(store, env, session)
    return pin if pin is not None and pin.notified else None


async def test_pins_expire_ttl_after_last_use(
    stack: Stack, store: EtcdStore, etcd_node: EtcdNode
) -> None:
    side = stack.start_sidecar([etcd_node.client_url], args=("--pin-ttl", "2"))
    await settled(side, "r1")
    await chat(side.url, "idle")
    await chat(side.url, "busy")
    await until(lambda: stored_pin(store, stack.env, "idle"), "idle pinned")
    started = time.monotonic()
    while await stored_pin(store, stack.env, "idle") is not None:
        assert time.monotonic() - started < 12, "the idle pin should expire"
        await chat(side.url, "busy")  # used all along: refreshed onto fresh leases
        await asyncio.sleep(0.4)
    assert time.monotonic() - started >= 1.5  # not before its TTL
    for _ in range(8):
        await chat(side.url, "busy")
        await asyncio.sleep(0.4)
    assert await stored_pin(store, stack.env, "busy") is not None
    await wait_for(f"{side.url}/status", lambda b: b["pins"]["cached"] == 1)


async def test_etcd_outage_pins_locally_survives_restart_and_flushes_later(
    tmp_path: Path, fresh_etcd: EtcdNode, etcd_env: str
) -> None:
    stack = make_stack(tmp_path, etcd_env, [fresh_etcd.client_url])
    try:
        side = stack.start_sidecar([fresh_etcd.client_url], name="side")
        await settled(side, "r1")
        fresh_etcd.stop()
        sessions = [f"off-{i}" for i in range(3)]
        for sid in sessions:
            assert await chat(side.url, sid) == ("r1", None)
        await wait_for(f"{side.url}/status", lambda b: b["pins"]["pending"] == 3)

        side.stop()  # restarted during the outage: the saved table still pins them
        side = stack.start_sidecar([fresh_etcd.client_url], name="side")
        _, status = await get_json(f"{side.url}/status")
        assert (status["pins"]["cached"], status["pins"]["pending"]) == (3, 3)
        assert await chat(side.url, "off-0") == ("r1", None)

        fresh_etcd.start().wait_ready()
        store = EtcdStore([fresh_etcd.client_url])
        try:
            for sid in sessions:
                pin = await until(
                    functools.partial(stored_pin, store, etcd_env, sid), f"{sid} flushed"
                )
                assert pin.release == "r1"
            await wait_for(f"{side.url}/status", lambda b: b["pins"]["pending"] == 0)
        finally:
            await store.close()
        stack.ctl("route", "set-stable", AGENT, "r2")
        await settled(side, "r2")
        assert await chat(side.url, "off-1") == ("r1", None)
        assert await chat(side.url, "fresh") == ("r2", None)
    finally:
        stack.stop()


async def test_pins_survive_a_leader_kill(
    tmp_path: Path, etcd_cluster: EtcdCluster, etcd_env: str
) -> None:
    stack = make_stack(tmp_path, etcd_env, etcd_cluster.endpoints)
    store = EtcdStore(etcd_cluster.endpoints)
    try:
        side = stack.start_sidecar(etcd_cluster.endpoints, name="side")
        await settled(side, "r1")
        await chat(side.url, "before")
        await until(lambda: stored_pin(store, etcd_env, "before"), "pinned before the kill")
        await asyncio.to_thread(etcd_cluster.kill_leader)
        await chat(side.url, "during")  # pinned locally, written once a leader is elected
        stack.ctl("route", "set-stable", AGENT, "r2")
        await settled(side, "r2")
        assert await chat(side.url, "before") == ("r1", None)
        assert await chat(side.url, "during") == ("r1", None)
        for sid in ("before", "during"):
            pin = await until(functools.partial(stored_pin, store, etcd_env, sid), f"{sid} in etcd")
            assert pin.release == "r1"
    finally:
        await store.close()
        stack.stop()
