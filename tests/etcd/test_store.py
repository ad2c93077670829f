"""Tier 3: EtcdStore against a real etcd: revisions, CAS, leases, watches, errors, failover."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from holdfast.keyspace import Keyspace
from holdfast.store import CasConflict, Change, Compacted, LeaseNotFound, Put, StoreUnavailable
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


async def test_put_get_delete_and_revisions(store: EtcdStore, etcd_env: str) -> None:
    key = Keyspace(etcd_env).flag("a")
    first = await store.put(key, b"one")
    kv = await store.get(key)
    assert kv is not None
    assert (kv.value, kv.mod_revision, kv.create_revision, kv.version) == (b"one", first, first, 1)
    second = await store.put(key, b"two")
    assert second > first
    kv = await store.get(key)
    assert kv is not None
    assert (kv.value, kv.mod_revision, kv.create_revision, kv.version) == (b"two", second, first, 2)
    assert await store.revision() >= second
    deleted = await store.delete(key)
    assert deleted > second
    assert await store.get(key) is None
    assert await store.delete(key) == await store.revision()  # deleting nothing: no new revision


async def test_list_prefix_is_sorted_and_bounded(store: EtcdStore, etcd_env: str) -> None:
    prefix = Keyspace(etcd_env).prefix
    for suffix in ("flags/b", "flags/a", "routes/x"):
        await store.put(prefix + suffix, suffix.encode())
    await store.put(prefix.rstrip("/") + "x/outside", b"no")  # shares the text, not the prefix
    revision, kvs = await store.list_prefix(prefix)
    assert [kv.key for kv in kvs] == [prefix + s for s in ("flags/a", "flags/b", "routes/x")]
    assert revision == await store.revision()
    assert revision >= max(kv.mod_revision for kv in kvs)
    assert await store.list_prefix(prefix + "nothing/") == (revision, [])


async def test_txn_applies_everything_at_one_revision(store: EtcdStore, etcd_env: str) -> None:
    ks = Keyspace(etcd_env)
    old = await store.put(ks.flag("old"), b"v1")
    gone = ks.flag("gone")
    await store.put(gone, b"x")
    result = await store.txn(
        [Put(ks.flag("old"), b"v2", old), Put(ks.flag("new"), b"n", 0), Put(ks.flag("free"), b"f")],
        [gone],
    )
    for name in ("old", "new", "free"):
        kv = await store.get(ks.flag(name))
        assert kv is not None
        assert kv.mod_revision == result.revision
    assert await store.get(gone) is None


@pytest.mark.parametrize("stale", ["exists", "changed"])
async def test_txn_conflict_names_key_and_writes_nothing(
    store: EtcdStore, etcd_env: str, stale: str
) -> None:
    ks = Keyspace(etcd_env)
    fine = await store.put(ks.flag("fine"), b"v1")
    await store.put(ks.flag("doomed"), b"v1")
    actual = await store.put(ks.flag("hot"), b"v1")
    if stale == "changed":
        actual = await store.put(ks.flag("hot"), b"v2")
    expected = 0 if stale == "exists" else actual - 1
    before = await store.revision()
    with pytest.raises(CasConflict) as caught:
        await store.txn(
            [Put(ks.flag("fine"), b"w", fine), Put(ks.flag("hot"), b"w", expected)],
            [ks.flag("doomed")],
        )
    assert (caught.value.key, caught.value.expected_mod_revision) == (ks.flag("hot"), expected)
    assert caught.value.actual_mod_revision == actual
    assert await store.revision() == before
    fine_kv = await store.get(ks.flag("fine"))
    assert fine_kv is not None
    assert fine_kv.value == b"v1"
    assert await store.get(ks.flag("doomed")) is not None


async def test_txn_touching_a_key_twice_is_refused(store: EtcdStore, etcd_env: str) -> None:
    key = Keyspace(etcd_env).flag("twice")
    with pytest.raises(ValueError, match="twice"):
        await store.txn([Put(key, b"x")], [key])


async def test_txn_conflict_on_missing_key(store: EtcdStore, etcd_env: str) -> None:
    key = Keyspace(etcd_env).flag("missing")
    with pytest.raises(CasConflict) as caught:
        await store.txn([Put(key, b"x", 5)])
    assert caught.value.actual_mod_revision == 0


async def test_lease_expiry_removes_keys(store: EtcdStore, etcd_env: str) -> None:
    key = Keyspace(etcd_env).health("sc-1")
    lease = await store.grant_lease(1)
    await store.put(key, b"alive", lease=lease)
    assert await store.keepalive_once(lease) >= 1
    kv = await store.get(key)
    assert kv is not None
    assert kv.lease == lease

    async def gone() -> bool:
        return await store.get(key) is None

    await eventually(gone, 6, "the leased key expires")
    assert await store.keepalive_once(lease) == 0
    with pytest.raises(LeaseNotFound):
        await store.put(key, b"late", lease=lease)


async def test_revoke_deletes_at_once_and_twice_is_fine(store: EtcdStore, etcd_env: str) -> None:
    key = Keyspace(etcd_env).health("sc-2")
    lease = await store.grant_lease(30)
    await store.put(key, b"alive", lease=lease)
    await store.revoke_lease(lease)
    assert await store.get(key) is None
    await store.revoke_lease(lease)


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


async def test_watch_yields_one_batch_per_revision(store: EtcdStore, etcd_env: str) -> None:
    ks = Keyspace(etcd_env)
    start = await store.revision() + 1
    one = await store.put(ks.flag("a"), b"1")
    both = await store.txn([Put(ks.flag("b"), b"2"), Put(ks.flag("c"), b"3")])
    gone = await store.delete(ks.flag("a"))
    await store.put(Keyspace(etcd_env + "x").flag("a"), b"other env")
    progress: list[int] = []
    batches: list[list[Change]] = []
    async with asyncio.timeout(10):
        async for batch in store.watch(ks.prefix, start, on_progress=progress.append):
            batches.append(batch)
            if len(batches) == 3:
                break
    assert [[(c.kind, c.key, c.mod_revision) for c in b] for b in batches] == [
        [("put", ks.flag("a"), one)],
        [("put", ks.flag("b"), both.revision), ("put", ks.flag("c"), both.revision)],
        [("delete", ks.flag("a"), gone)],
    ]
    assert batches[1][0].value == b"2"
    assert batches[1][0].create_revision == both.revision
    assert progress  # the stream reported itself established


async def test_watch_of_compacted_revision_raises(fresh_etcd: EtcdNode) -> None:
    store = EtcdStore([fresh_etcd.client_url])
    try:
        for i in range(3):
            await store.put(f"/c/{i}", b"x")
        head = await store.revision()
        await store.compact(head)
        await store.compact(head - 1)  # already compacted: no error

        async def drain() -> None:
            async for _ in store.watch("/c/", 1):
                pass

        with pytest.raises(Compacted) as caught:
            await asyncio.wait_for(drain(), 10)
        assert caught.value.compact_revision == head
    finally:
        await store.close()


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
