"""MemoryStore: the store contract (the same cases tier 3 runs against etcd), then what only the
fake has -- its clock, its simulated outage -- and the store's consumers (mirror, lease keeper)
running on it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from holdfast.store import Change, Compacted, KeyValue, Put, StoreUnavailable
from holdfast.store.lease import LeaseKeeper
from holdfast.store.memory import MemoryStore
from holdfast.store.mirror import MirrorUpdate, PrefixMirror
from tests.store_contract import CASES, ContractCase, Env


class Clock:
    """A manual clock: time moves only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def memory_env(store: MemoryStore, clock: Clock) -> Env:
    async def elapse(seconds: float) -> None:
        clock.advance(seconds)
        await asyncio.sleep(0)

    async def outage() -> None:
        store.unavailable = True

    async def recover() -> None:
        store.unavailable = False

    return Env(store, "/contract/", elapse, outage, recover)


@pytest.mark.parametrize("contract", CASES, ids=[c.name for c in CASES])
async def test_store_contract(contract: ContractCase) -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    await contract.run(memory_env(store, clock))


# -- without an event loop --------------------------------------------------------------------


def test_built_and_driven_without_an_event_loop() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    store.unavailable = True
    store.unavailable = False
    assert store.expire_leases() == []
    assert store.endpoint == "memory://"


# -- revisions and keys -----------------------------------------------------------------------


async def test_a_fresh_store_is_at_revision_one_like_etcd() -> None:
    store = MemoryStore()
    assert await store.revision() == 1
    assert await store.list_prefix("") == (1, [])
    assert await store.put("/a", b"x") == 2


async def test_empty_prefix_lists_every_key_in_byte_order() -> None:
    store = MemoryStore()
    for key in ("/b", "/a", "\udcff", "/\u00e9", "/\udc80"):  # lone surrogates: raw bytes
        await store.put(key, b"")
    _, kvs = await store.list_prefix("")
    assert [kv.key for kv in kvs] == ["/a", "/b", "/\udc80", "/\u00e9", "\udcff"]


async def test_kv_values_are_snapshots() -> None:
    store = MemoryStore()
    await store.put("/k", b"1")
    before = await store.get("/k")
    await store.put("/k", b"2")
    assert before == KeyValue("/k", b"1", 2, 2, 1)


# -- leases on the injected clock -------------------------------------------------------------


async def test_lease_expires_exactly_at_its_ttl_and_keepalive_restarts_it() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    lease = await store.grant_lease(10)
    await store.put("/k", b"x", lease=lease)
    clock.advance(9.9)
    assert await store.get("/k") is not None
    assert await store.keepalive_once(lease) == 10
    clock.advance(9.9)
    assert await store.get("/k") is not None
    clock.advance(0.1)
    assert await store.get("/k") is None
    assert await store.keepalive_once(lease) == 0


async def test_expired_leases_go_in_expiry_order_one_revision_each() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    late = await store.grant_lease(5)
    early = await store.grant_lease(2)
    await store.put("/late/1", b"", lease=late)
    await store.put("/early/2", b"", lease=early)
    await store.put("/early/1", b"", lease=early)
    start = await store.revision()
    clock.advance(6)
    assert store.expire_leases() == [early, late]  # reaped without any call to the store
    assert await store.revision() == start + 2
    batches = []
    async for batch in store.watch("/", start + 1):
        batches.append([(c.kind, c.key, c.mod_revision) for c in batch])
        if len(batches) == 2:
            break
    assert batches == [
        [("delete", "/early/1", start + 1), ("delete", "/early/2", start + 1)],
        [("delete", "/late/1", start + 2)],
    ]


async def test_lease_ids_are_distinct_and_never_zero() -> None:
    store = MemoryStore()
    ids = [await store.grant_lease(1) for _ in range(5)]
    assert len(set(ids)) == 5
    assert 0 not in ids
    with pytest.raises(ValueError, match="positive"):
        await store.grant_lease(0)


async def test_deleted_key_leaves_its_lease() -> None:
    store = MemoryStore()
    lease = await store.grant_lease(30)
    await store.put("/k", b"1", lease=lease)
    await store.delete("/k")
    await store.put("/k", b"2")
    before = await store.revision()
    await store.revoke_lease(lease)
    assert await store.revision() == before  # the lease had no keys left
    assert await store.get("/k") is not None


# -- outages and closing ----------------------------------------------------------------------


async def test_unavailable_refuses_everything_and_applies_nothing() -> None:
    store = MemoryStore()
    lease = await store.grant_lease(30)
    await store.put("/k", b"1")
    store.unavailable = True
    calls: list[Callable[[], Awaitable[object]]] = [
        store.connect,
        store.revision,
        lambda: store.get("/k"),
        lambda: store.list_prefix("/"),
        lambda: store.put("/k", b"2"),
        lambda: store.delete("/k"),
        lambda: store.txn([Put("/k", b"3")]),
        lambda: store.grant_lease(5),
        lambda: store.keepalive_once(lease),
        lambda: store.revoke_lease(lease),
        lambda: store.compact(1),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable, match="simulated outage"):
            await call()
    store.unavailable = False
    kv = await store.get("/k")
    assert kv is not None
    assert (kv.value, await store.revision()) == (b"1", 2)
    assert await store.keepalive_once(lease) == 30


async def test_outage_wakes_a_waiting_watch() -> None:
    store = MemoryStore()
    seen: list[list[Change]] = []

    async def consume() -> None:
        async for batch in store.watch("/", 2):
            seen.append(batch)

    task = asyncio.create_task(consume())
    await store.put("/a", b"x")
    await asyncio.sleep(0.01)
    store.unavailable = True
    with pytest.raises(StoreUnavailable, match="stream broke"):
        await asyncio.wait_for(task, 1)
    assert [[c.key for c in b] for b in seen] == [["/a"]]


# -- watches ----------------------------------------------------------------------------------


async def test_watch_of_an_empty_store_from_its_first_revision_waits() -> None:
    store = MemoryStore()
    watch = store.watch("/", 1)
    pending = asyncio.create_task(anext(watch))
    await asyncio.sleep(0.01)
    assert not pending.done()
    first = await store.put("/a", b"")
    assert [c.mod_revision for c in await asyncio.wait_for(pending, 1)] == [first]
    await watch.aclose()


async def test_watch_from_zero_starts_after_the_current_revision() -> None:
    store = MemoryStore()
    await store.put("/old", b"")
    watch = store.watch("/", 0)
    pending = asyncio.create_task(anext(watch))
    await asyncio.sleep(0.01)
    assert not pending.done()
    new = await store.put("/new", b"")
    batch = await asyncio.wait_for(pending, 1)
    assert [(c.key, c.mod_revision) for c in batch] == [("/new", new)]
    await watch.aclose()


async def test_a_watch_behind_a_compaction_is_compacted() -> None:
    store = MemoryStore()
    for i in range(4):
        await store.put(f"/k{i}", b"")
    watch = store.watch("/", 2)
    first = await anext(watch)
    assert [c.key for c in first] == ["/k0"]
    await store.compact(5)
    with pytest.raises(Compacted) as caught:
        await anext(watch)
    assert caught.value.compact_revision == 5


async def test_watch_skips_revisions_outside_its_prefix() -> None:
    store = MemoryStore()
    await store.put("/other/a", b"")
    mine = await store.put("/mine/a", b"")
    await store.txn([Put("/other/b", b""), Put("/mine/b", b"")])
    watch = store.watch("/mine/", 1)
    assert [(c.key, c.mod_revision) for c in await anext(watch)] == [("/mine/a", mine)]
    assert [c.key for c in await anext(watch)] == ["/mine/b"]  # only its own keys of the txn
    await watch.aclose()


# -- the store's consumers on it --------------------------------------------------------------


async def wait_for(check: Callable[[], bool], what: str) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"not within 5 s: {what}")


async def test_mirror_follows_resyncs_after_compaction_and_resumes_after_outage() -> None:
    store = MemoryStore()
    await store.put("/p/a", b"1")
    mirror = PrefixMirror(store, "/p/", retry_initial=0.01, retry_max=0.05, probe_interval=0.05)
    updates: list[MirrorUpdate] = []
    mirror.subscribe(updates.append)
    await mirror.start()
    try:
        assert await mirror.wait_synced(5)
        await wait_for(lambda: mirror.connected, "connected")
        await store.put("/p/b", b"2")
        await store.put("/q/x", b"outside")
        await wait_for(lambda: "/p/b" in mirror.state, "delta")
        assert [u.reset for u in updates] == [True, False]

        store.unavailable = True
        await wait_for(lambda: not mirror.connected, "the outage noticed")
        store.unavailable = False
        await store.put("/p/c", b"3")
        await wait_for(lambda: "/p/c" in mirror.state, "resumed")
        assert mirror.reconnects >= 1
        assert mirror.resyncs == 0  # resumed from its revision, no re-list

        store.unavailable = True
        await wait_for(lambda: not mirror.connected, "down again")
        await store_while_down_then_compact(store)
        await wait_for(lambda: mirror.resyncs == 1, "re-listed after compaction")
        assert set(mirror.state) == {"/p/a", "/p/c", "/p/d"}
        assert mirror.revision == await store.revision()
        assert updates[-1].reset
    finally:
        await mirror.close()


async def store_while_down_then_compact(store: MemoryStore) -> None:
    store.unavailable = False
    await store.delete("/p/b")
    await store.put("/p/d", b"4")
    await store.compact(await store.revision())


async def test_lease_keeper_regrants_a_lease_revoked_behind_its_back() -> None:
    store = MemoryStore()
    granted: list[int] = []

    async def on_new_lease(lease: int) -> None:
        granted.append(lease)
        await store.put("/health/sc", b"alive", lease=lease)

    keeper = LeaseKeeper(store, 1, on_new_lease=on_new_lease)
    await keeper.start()
    try:
        await store.revoke_lease(granted[0])
        assert await store.get("/health/sc") is None
        await wait_for(lambda: len(granted) == 2, "regranted")
        kv = await store.get("/health/sc")
        assert kv is not None
        assert kv.lease == granted[1] == keeper.lease_id
    finally:
        await keeper.close()
    assert await store.get("/health/sc") is None  # close revoked it
