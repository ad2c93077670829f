"""Tier 3: what only EtcdStore has, against a real etcd: endpoint validation, failover, hung and
unreachable etcd, the lease keeper. Revisions, CAS, leases and watches are the store contract
(test_store_contract.py), which the unit tier runs against MemoryStore too."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from holdfast.keyspace import Keyspace
from holdfast.store import StoreUnavailable
from holdfast.store.etcd import EtcdStore
from holdfast.store.failover import DOWN_GRACE_S
from holdfast.store.lease import LeaseKeeper
from holdfast_devtools.etcd_host import free_port
from holdfast_devtools.etcd_local import EtcdNode

pytestmark = pytest.mark.etcd


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)


def test_endpoints_are_validated() -> None:
    mixed = ["http://127.0.0.1:2379", "https://127.0.0.1:2380"]
    for bad in ([], ["junk"], ["127.0.0.1:2379"], ["ftp://h:2379"], ["http://h:99999"], mixed):
        with pytest.raises(ValueError):
            EtcdStore(bad)
    with pytest.raises(ValueError):
        EtcdStore("http://127.0.0.1:2379")
    assert EtcdStore(["http://localhost"]).endpoint == "http://localhost:2379"


async def test_lease_keeper_keeps_alive_and_regrants(store: EtcdStore, etcd_env: str) -> None:
    key = Keyspace(etcd_env).health("sc-3")
    granted: list[int] = []

    async def on_new_lease(lease: int) -> None:
        granted.append(lease)
        await store.put(key, b"alive", lease=lease)

    keeper = LeaseKeeper(store, 1, on_new_lease=on_new_lease)
    await keeper.start()
    try:
        assert keeper.lease_id == granted[0] != 0
        await asyncio.sleep(2.5)  # well past the 1 s TTL
        kv = await store.get(key)
        assert kv is not None
        assert kv.lease == granted[0]
        await store.revoke_lease(granted[0])  # the lease "expires" behind the keeper's back

        async def rewritten() -> bool:
            kv = await store.get(key)
            return kv is not None and kv.lease != granted[0]

        await eventually(rewritten, 5, "the keeper regrants and rewrites the key")
        assert keeper.lease_id == granted[-1] != granted[0]
    finally:
        await keeper.close()
    assert keeper.lease_id == 0
    assert await store.get(key) is None  # close revoked the lease


async def test_unreachable_endpoints_fail_fast_and_fail_over(etcd_node: EtcdNode) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    lonely = EtcdStore([dead], timeout=1.0)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="no etcd endpoint answered"):
        await lonely.connect()
    assert time.monotonic() - started < 3
    await lonely.close()

    both = EtcdStore([dead, etcd_node.client_url], timeout=2.0)
    try:
        await both.connect()
        assert both.endpoint == etcd_node.client_url
        # Nothing was ever sent to the dead endpoint, so a write may go elsewhere safely.
        assert await both.put("/failover/probe", b"x") > 0
    finally:
        await both.close()
    with pytest.raises(StoreUnavailable):
        await both.get("/failover/probe")

    # With the default 5 s budget, endpoints that all refuse connections end a call after the
    # short down grace, not at the end of the budget.
    two_dead = EtcdStore([dead, f"http://127.0.0.1:{free_port()}"])
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="no etcd endpoint answered"):
        await two_dead.get("/failover/probe")
    assert DOWN_GRACE_S <= time.monotonic() - started < DOWN_GRACE_S + 1.5
    await two_dead.close()


async def test_write_to_hung_etcd_has_unknown_outcome(fresh_etcd: EtcdNode) -> None:
    store = EtcdStore([fresh_etcd.client_url], timeout=1.0)
    try:
        await store.connect()
        fresh_etcd.pause()  # returns once etcd has stopped, so nothing can answer the put
        try:
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match=r"DEADLINE_EXCEEDED.*outcome is unknown"):
                await store.put("/hung/key", b"maybe")
            assert time.monotonic() - started >= 0.9  # it hung for the call's budget
        finally:
            fresh_etcd.resume()

        kv = await store.get("/hung/key")  # usable again; the write may or may not be there
        assert kv is None or kv.value == b"maybe"
    finally:
        await store.close()


async def test_many_watches_share_one_grpc_stream(etcd_node: EtcdNode, etcd_env: str) -> None:
    """Watches of one store are watch ids on one Watch stream (counted by etcd itself), and the
    adapter counts what they bring in per key directory."""
    ks = Keyspace(etcd_env)

    def streams() -> float:
        return etcd_node.metrics().get("etcd_debugging_mvcc_watch_stream_total", -1)

    store = EtcdStore([etcd_node.client_url])
    await store.connect()
    before = streams()
    start = await store.revision() + 1
    prefixes = [ks.kind_prefix(kind) for kind in ("flags", "releases", "prompts", "budgets")]
    established: list[int] = []
    seen: list[str] = []

    async def follow(prefix: str) -> None:
        async for batch in store.watch(prefix, start, on_progress=established.append):
            seen.extend(c.key for c in batch)

    tasks = [asyncio.create_task(follow(p)) for p in prefixes]
    try:
        await eventually(lambda: _true(len(established) == 4), 10, "four watches established")
        assert store.watch_streams == 1
        assert streams() == before + 1  # etcd counts one stream for the four
        writer = EtcdStore([etcd_node.client_url])
        try:
            for p in prefixes:
                await writer.put(p + "x", b"v" * 10)
            await writer.put(ks.kind_prefix("pins") + "agent/s", b"not watched")
        finally:
            await writer.close()
        await eventually(lambda: _true(len(seen) == 4), 10, "each watch got its key")
        assert sorted(seen) == sorted(p + "x" for p in prefixes)
        by_dir = store.traffic.by_dir
        assert {d: by_dir[d][0] for d in prefixes} == dict.fromkeys(prefixes, 1)
        assert ks.kind_prefix("pins") + "agent/" not in by_dir
        assert store.traffic.bytes > 0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await eventually(lambda: _true(store.watch_streams == 0), 5, "the last watch closes the stream")
    await store.close()


async def _true(value: bool) -> bool:
    return value


async def test_keepalives_of_many_leases_share_one_stream(etcd_node: EtcdNode) -> None:
    """Every keepalive of a store goes over one LeaseKeepAlive stream (not a stream each), and
    an expired lease answers 0 on it."""

    def started() -> float:
        metrics = etcd_node.metrics()
        name = 'grpc_server_started_total{grpc_method="LeaseKeepAlive"'
        return sum(v for k, v in metrics.items() if k.startswith(name))

    store = EtcdStore([etcd_node.client_url])
    await store.connect()
    try:
        leases = [await store.grant_lease(30) for _ in range(5)]
        before = started()
        for _ in range(3):
            ttls = await asyncio.gather(*(store.keepalive_once(lease) for lease in leases))
            assert all(20 < ttl <= 30 for ttl in ttls)
        assert started() == before + 1  # fifteen keepalives, one stream
        await store.revoke_lease(leases[0])
        assert await store.keepalive_once(leases[0]) == 0
    finally:
        await store.close()
