"""Tier 3: session pins through real sidecar processes, real etcd (one node, a cluster, outages)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openai import AsyncOpenAI
from prometheus_client import CollectorRegistry

from holdfast.keyspace import Keyspace, Pin, Release, Route
from holdfast.store import KeyValue, Put
from holdfast.store.etcd import EtcdStore
from holdfast_devtools import procs
from holdfast_devtools.etcd_cluster import EtcdCluster
from holdfast_devtools.etcd_local import EtcdNode
from sidecar.config.state import ConfigSnapshot, ConfigState
from sidecar.pins.claim import PinClaims
from sidecar.pins.metrics import PinMetrics
from sidecar.pins.pinning import Pinning
from sidecar.pins.table import PinTable
from sidecar.pins.writer import PinWriter
from tests.etcd.spine_stack import AGENT, Stack, get_json, stable_is, start_stack, wait_for

pytestmark = pytest.mark.etcd


def make_stack(base: Path, env: str, etcd: Sequence[str]) -> Stack:
    stack = start_stack(base, env, etcd)
    stack.create_releases(("r1", "model-one"), ("r2", "model-two"))
    stack.set_stable("r1")
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


async def test_route_change_between_turns_on_two_sidecars_keeps_the_first_release(
    stack: Stack, etcd_node: EtcdNode
) -> None:
    """Turns alternate between two sidecar processes while the route moves, with no wait for
    the pins to reach the other sidecar: only the route change itself is awaited there."""
    one = stack.start_sidecar([etcd_node.client_url], name="one")
    two = stack.start_sidecar([etcd_node.client_url], name="two")
    for side in (one, two):
        await settled(side, "r1")
    assert await chat(one.url, "hop-a") == ("r1", None)
    assert await chat(two.url, "hop-b") == ("r1", None)
    revision = json.loads(stack.ctl("--json", "route", "set-stable", AGENT, "r2").stdout)
    for side in (two, one):  # each has applied the new route, and nothing else is waited for
        await wait_for(
            f"{side.url}/status",
            lambda b: (b["config"]["revision"] or 0) >= revision["mod_revision"],
        )
    assert await chat(two.url, "hop-a") == ("r1", None)
    assert await chat(one.url, "hop-b") == ("r1", None)
    assert await chat(one.url, "hop-c") == ("r2", None)
    assert await chat(two.url, "hop-c") == ("r2", None)
    for side in (one, two):
        _, status = await get_json(f"{side.url}/status")
        pins = status["pins"]
        assert pins["claims_created"] >= 1 and pins["claims_fallback"] == 0, pins
        assert pins["conflicts"] == 0, pins  # no create lost a race and adopted afterwards


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
        _, status = await get_json(f"{side.url}/status")  # etcd could not be asked: local
        assert (status["pins"]["claims_fallback"], status["pins"]["claims_created"]) == (3, 0)

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


# -- first turns settled with etcd (in-process pinning over a real etcd) ---------------------


@dataclass
class PinSide:
    """One sidecar's pinning pieces over its own connection to etcd, with no watch feeding its
    table: exactly a sidecar that another sidecar's pin has not reached yet."""

    store: EtcdStore
    table: PinTable
    writer: PinWriter
    claims: PinClaims
    pinning: Pinning

    async def close(self) -> None:
        await self.writer.close(flush_timeout=0)
        await self.store.close()


@contextlib.asynccontextmanager
async def pin_side(
    url: str, env: str, *, timeout: float = 5.0, max_pending: int = 1000
) -> AsyncIterator[PinSide]:
    keyspace = Keyspace(env)
    store = EtcdStore([url], timeout=2.0)
    metrics = PinMetrics(CollectorRegistry(), AGENT)
    table = PinTable(keyspace, AGENT)
    writer = PinWriter(store, table, keyspace, metrics, ttl=60, max_pending=max_pending)
    claims = PinClaims(store, keyspace, writer, metrics, timeout=timeout)
    side = PinSide(
        store, table, writer, claims, Pinning(AGENT, table, metrics, ttl=60, claims=claims)
    )
    await writer.start()
    try:
        yield side
    finally:
        await side.close()


def routed_to(stable: str) -> ConfigSnapshot:
    """A config snapshot with releases r1 and r2 and ``stable`` as the route's stable."""
    keyspace = Keyspace("dev")
    state = ConfigState(keyspace, AGENT)
    kvs = {}
    for name in ("r1", "r2"):
        release = Release(agent=AGENT, name=name, model=f"m-{name}", base_url="http://127.0.0.1:1")
        key = keyspace.release(AGENT, name)
        kvs[key] = KeyValue(key, release.encode(), 1, 1, 1)
    route = Route(agent=AGENT, stable=stable)
    kvs[keyspace.route(AGENT)] = KeyValue(keyspace.route(AGENT), route.encode(), 2, 2, 1)
    state.apply_reset(10, kvs, "etcd")
    assert state.current is not None
    return state.current


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_first_turn_elsewhere_keeps_the_release_pinned_before_the_route_changed(
    etcd_node: EtcdNode, etcd_env: str, store: EtcdStore
) -> None:
    """The route moves r1 -> r2 between a session's first turn on A and its next turn on B, and
    B has not received A's pin: B's first turn finds it in etcd and serves r1."""
    before, after = routed_to("r1"), routed_to("r2")
    async with (
        pin_side(etcd_node.client_url, etcd_env) as a,
        pin_side(etcd_node.client_url, etcd_env) as b,
    ):
        assert a.pinning.lookup(before, AGENT, "conv") is None  # unknown here: ask etcd
        first = await a.pinning.first_turn(before, AGENT, "conv")
        assert (first.release.name, first.kind) == ("r1", "new")
        stored = await stored_pin(store, etcd_env, "conv")
        assert stored is not None and stored.release == "r1"  # in etcd before it was answered
        assert (a.claims.created, a.writer.pending) == (1, 0)  # nothing left for the writer

        second = await b.pinning.first_turn(after, AGENT, "conv")
        assert (second.release.name, second.kind, second.migrated_from) == ("r1", "pinned", None)
        assert (b.claims.created, b.claims.adopted, b.claims.fallbacks) == (0, 1, 0)
        assert b.writer.pending == 0  # no losing create queued that would adopt later
        third = b.pinning.lookup(after, AGENT, "conv")  # from now on a dict hit
        assert third is not None and third.release.name == "r1"
        fresh = await b.pinning.first_turn(after, AGENT, "fresh")
        assert (fresh.release.name, fresh.kind) == ("r2", "new")  # new sessions follow r2
        # what B would have done without asking etcd: the split this guards against
        blind = Pinning(AGENT, PinTable(Keyspace(etcd_env), AGENT), b.pinning.metrics, ttl=60)
        assert blind.resolve(after, AGENT, "conv").release.name == "r2"


async def test_concurrent_first_turns_in_one_sidecar_pick_one_release_even_with_etcd_down(
    etcd_node: EtcdNode, etcd_env: str
) -> None:
    snapshots = [routed_to("r1"), routed_to("r2")] * 10  # the route changes among them
    async with pin_side(etcd_node.client_url, etcd_env) as up:
        served = await asyncio.gather(
            *(up.pinning.first_turn(s, AGENT, "together") for s in snapshots)
        )
        assert len({r.release.name for r in served}) == 1
        assert (up.claims.created, up.claims.adopted) == (1, 0)  # one create for all twenty

    dead = f"http://127.0.0.1:{closed_port()}"
    async with pin_side(dead, etcd_env, timeout=0.3) as down:
        started = time.monotonic()
        served = await asyncio.gather(
            *(down.pinning.first_turn(s, AGENT, "offline") for s in snapshots)
        )
        assert time.monotonic() - started < 2.0  # bounded by the timeout, not etcd's own
        assert len({r.release.name for r in served}) == 1
        assert down.claims.fallbacks == 1  # one decision, made locally ...
        entry = down.table.get("offline")
        assert entry is not None and entry.pending  # ... and queued for the writer
        quick = time.monotonic()
        other = await down.pinning.first_turn(snapshots[1], AGENT, "next")
        assert other.release.name == "r2" and time.monotonic() - quick < 0.2  # no new wait
        assert down.claims.fallbacks == 2 and down.writer.pending == 2


async def test_a_dropped_create_reaches_etcd_once_it_is_back(
    fresh_etcd: EtcdNode, etcd_env: str
) -> None:
    fresh_etcd.stop()
    async with pin_side(fresh_etcd.client_url, etcd_env, timeout=0.2, max_pending=2) as side:
        sessions = [f"over-{i}" for i in range(5)]
        for sid in sessions:
            side.pinning.resolve(routed_to("r1"), AGENT, sid)  # decided locally, queued
        assert (side.writer.pending, side.writer.dropped, side.writer.parked) == (2, 3, 3)
        await asyncio.to_thread(lambda: fresh_etcd.start().wait_ready())
        store = EtcdStore([fresh_etcd.client_url])
        try:
            for sid in sessions:  # never used again, all five still reach etcd
                pin = await until(
                    functools.partial(stored_pin, store, etcd_env, sid), f"{sid} written",
                    timeout=30,
                )  # fmt: skip
                assert pin.release == "r1"
        finally:
            await store.close()
        await until(lambda: _drained(side), "writer drained")


async def _drained(side: PinSide) -> bool:
    return side.writer.pending == 0 and side.writer.parked == 0
