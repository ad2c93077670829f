"""The behaviour every ``Store`` must show, as cases run against a real etcd and the memory store.

``tests/etcd/test_store_contract.py`` runs each case against ``EtcdStore`` and a real etcd node,
``tests/unit/test_memory_store.py`` against ``MemoryStore``: if the fake drifts from etcd, one of
the two fails. A case gets an ``Env``: the store, a key prefix of its own, and the means to let
time pass and to cut the store off; ``fresh`` cases get a store nobody else uses (they compact or
stop it). The others share one store, but no other test writes to it meanwhile: a case may
count revisions.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from holdfast.store import (
    CasConflict,
    Change,
    Compacted,
    KeyRange,
    LeaseNotFound,
    Put,
    Store,
    StoreError,
    StoreUnavailable,
)


@dataclass(frozen=True)
class Env:
    store: Store
    prefix: str  # e.g. "/t1a2b3c4d/"; the case's keys live below it
    elapse: Callable[[float], Awaitable[None]]  # let this many seconds pass (leases)
    outage: Callable[[], Awaitable[None]]  # the store stops answering
    recover: Callable[[], Awaitable[None]]  # ... and answers again (same data)

    def key(self, name: str) -> str:
        return self.prefix + name


Case = Callable[[Env], Awaitable[None]]


@dataclass(frozen=True)
class ContractCase:
    name: str
    run: Case
    fresh: bool  # needs a store of its own: compacts it or takes it down


CASES: list[ContractCase] = []


def case(*, fresh: bool = False) -> Callable[[Case], Case]:
    def register(run: Case) -> Case:
        CASES.append(ContractCase(run.__name__, run, fresh))
        return run

    return register


async def eventually(env: Env, check: Callable[[], Awaitable[bool]], within: float) -> None:
    """Let time pass in small steps until ``check`` holds; fail after ``within`` seconds."""
    waited = 0.0
    while not await check():
        if waited > within:
            pytest.fail(f"not within {within}s")
        await env.elapse(0.1)
        waited += 0.1


@contextlib.asynccontextmanager
async def watching(
    env: Env, start_revision: int, what: str | KeyRange | None = None
) -> AsyncIterator[tuple[asyncio.Queue[list[Change] | BaseException], list[int]]]:
    """A watch of ``what`` (default: the case's prefix) running in a task: batches (or the
    error that ended it) arrive on the queue; the revisions passed to on_progress in the list."""
    queue: asyncio.Queue[list[Change] | BaseException] = asyncio.Queue()
    progress: list[int] = []
    established = asyncio.Event()

    def on_progress(revision: int) -> None:
        progress.append(revision)
        established.set()

    async def pump() -> None:
        try:
            async with contextlib.aclosing(
                env.store.watch(
                    env.prefix if what is None else what, start_revision, on_progress=on_progress
                )
            ) as batches:
                async for batch in batches:
                    await queue.put(batch)
        except StoreError as exc:
            await queue.put(exc)
        finally:
            established.set()

    task = asyncio.create_task(pump())
    try:
        async with asyncio.timeout(10):
            await established.wait()
        yield queue, progress
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def next_batch(queue: asyncio.Queue[list[Change] | BaseException]) -> list[Change]:
    async with asyncio.timeout(10):
        item = await queue.get()
    if isinstance(item, BaseException):
        raise item
    return item


def shape(batch: list[Change]) -> list[tuple[str, str, int]]:
    return [(c.kind, c.key, c.mod_revision) for c in batch]


# -- keys and revisions -----------------------------------------------------------------------


@case()
async def put_get_delete_and_revisions(env: Env) -> None:
    store, key = env.store, env.key("a")
    first = await store.put(key, b"one")
    kv = await store.get(key)
    assert kv is not None
    assert (kv.value, kv.mod_revision, kv.create_revision, kv.version) == (b"one", first, first, 1)
    assert kv.lease == 0
    second = await store.put(key, b"two")
    assert second > first
    kv = await store.get(key)
    assert kv is not None
    assert (kv.value, kv.mod_revision, kv.create_revision, kv.version) == (b"two", second, first, 2)
    third = await store.put(key, b"two")  # the same value again is a new revision too
    assert third == second + 1
    kv = await store.get(key)
    assert kv is not None
    assert (kv.mod_revision, kv.version) == (third, 3)
    assert await store.revision() >= third
    deleted = await store.delete(key)
    assert deleted > third
    assert await store.get(key) is None
    assert await store.delete(key) == await store.revision()  # deleting nothing: no new revision
    again = await store.put(key, b"new life")
    kv = await store.get(key)
    assert kv is not None
    assert (kv.create_revision, kv.version) == (again, 1)  # a new generation of the key


@case()
async def one_revision_counter_for_all_keys(env: Env) -> None:
    store = env.store
    before = await store.revision()
    a = await store.put(env.key("a"), b"1")
    b = await store.put(env.key("b"), b"2")
    assert before < a < b
    a_kv = await store.get(env.key("a"))
    assert a_kv is not None
    assert a_kv.mod_revision == a  # another key's write does not touch it


@case()
async def list_prefix_is_sorted_and_bounded(env: Env) -> None:
    store, prefix = env.store, env.prefix
    # "\udc80" is the raw byte 0x80 (surrogateescape): before "\u00e9" (0xc3 0xa9) in bytes,
    # after it in code points -- keys sort by their bytes, as etcd stores them.
    for suffix in ("flags/b", "flags/a", "routes/x", "flags/\u00e9", "flags/Z", "flags/\udc80"):
        await store.put(prefix + suffix, suffix.encode("utf-8", "surrogateescape"))
    await store.put(prefix.rstrip("/") + "x/outside", b"no")  # shares the text, not the prefix
    revision, kvs = await store.list_prefix(prefix)
    expected = ["flags/Z", "flags/a", "flags/b", "flags/\udc80", "flags/\u00e9", "routes/x"]
    assert [kv.key for kv in kvs] == [prefix + s for s in expected]
    assert revision == await store.revision()
    assert revision >= max(kv.mod_revision for kv in kvs)
    assert [kv.value for kv in kvs] == [s.encode("utf-8", "surrogateescape") for s in expected]
    assert await store.list_prefix(prefix + "nothing/") == (revision, [])


# -- transactions -----------------------------------------------------------------------------


@case()
async def txn_applies_everything_at_one_revision(env: Env) -> None:
    store, key = env.store, env.key
    old = await store.put(key("old"), b"v1")
    await store.put(key("gone"), b"x")
    before = await store.revision()
    result = await store.txn(
        [Put(key("old"), b"v2", old), Put(key("new"), b"n", 0), Put(key("free"), b"f")],
        [key("gone")],
    )
    assert result.revision == before + 1 == await store.revision()
    for name in ("old", "new", "free"):
        kv = await store.get(key(name))
        assert kv is not None
        assert kv.mod_revision == result.revision
    new = await store.get(key("new"))
    assert new is not None
    assert (new.create_revision, new.version) == (result.revision, 1)
    updated = await store.get(key("old"))
    assert updated is not None
    assert (updated.value, updated.version, updated.create_revision) == (b"v2", 2, old)
    assert await store.get(key("gone")) is None


async def _txn_conflict(env: Env, stale: str) -> None:
    store, key = env.store, env.key
    fine = await store.put(key("fine"), b"v1")
    await store.put(key("doomed"), b"v1")
    actual = await store.put(key("hot"), b"v1")
    if stale == "changed":
        actual = await store.put(key("hot"), b"v2")
    expected = 0 if stale == "exists" else actual - 1
    before = await store.revision()
    with pytest.raises(CasConflict) as caught:
        await store.txn(
            [Put(key("fine"), b"w", fine), Put(key("hot"), b"w", expected), Put(key("x"), b"w")],
            [key("doomed")],
        )
    assert (caught.value.key, caught.value.expected_mod_revision) == (key("hot"), expected)
    assert caught.value.actual_mod_revision == actual
    assert await store.revision() == before
    fine_kv = await store.get(key("fine"))
    assert fine_kv is not None
    assert fine_kv.value == b"v1"
    assert await store.get(key("doomed")) is not None
    assert await store.get(key("x")) is None


@case()
async def txn_conflict_on_existing_key_writes_nothing(env: Env) -> None:
    await _txn_conflict(env, "exists")


@case()
async def txn_conflict_on_changed_key_writes_nothing(env: Env) -> None:
    await _txn_conflict(env, "changed")


@case()
async def txn_conflict_names_the_first_failing_guard(env: Env) -> None:
    store, key = env.store, env.key
    first = await store.put(key("1"), b"x")
    second = await store.put(key("2"), b"x")
    with pytest.raises(CasConflict) as caught:
        await store.txn(
            [Put(key("1"), b"y", first), Put(key("2"), b"y", 1), Put(key("3"), b"y", 7)]
        )
    assert (caught.value.key, caught.value.actual_mod_revision) == (key("2"), second)


@case()
async def txn_conflict_on_missing_key(env: Env) -> None:
    key = env.key("missing")
    with pytest.raises(CasConflict) as caught:
        await env.store.txn([Put(key, b"x", 5)])
    assert caught.value.actual_mod_revision == 0
    assert await env.store.get(key) is None


@case()
async def txn_touching_a_key_twice_is_refused(env: Env) -> None:
    key = env.key("twice")
    before = await env.store.revision()
    with pytest.raises(ValueError, match="twice"):
        await env.store.txn([Put(key, b"x")], [key])
    with pytest.raises(ValueError, match="twice"):
        await env.store.txn([Put(key, b"x"), Put(key, b"y")])
    assert await env.store.revision() == before


@case()
async def txn_that_changes_nothing_makes_no_revision(env: Env) -> None:
    store = env.store
    await store.put(env.key("marker"), b"x")
    before = await store.revision()
    assert (await store.txn([], [env.key("missing")])).revision == before
    assert (await store.txn([])).revision == before
    assert await store.revision() == before


# -- leases -----------------------------------------------------------------------------------


@case()
async def unknown_lease_is_refused_and_nothing_written(env: Env) -> None:
    store, key = env.store, env.key("leased")
    lease = await store.grant_lease(30)
    await store.revoke_lease(lease)
    before = await store.revision()
    with pytest.raises(LeaseNotFound):
        await store.put(key, b"x", lease=lease)
    with pytest.raises(LeaseNotFound):
        await store.txn([Put(env.key("other"), b"x"), Put(key, b"x", 0, lease=lease)])
    assert await store.revision() == before
    assert await store.get(env.key("other")) is None
    assert await store.keepalive_once(lease) == 0
    await store.revoke_lease(lease)  # already gone is fine


@case()
async def lease_expiry_removes_keys(env: Env) -> None:
    store, key = env.store, env.key("health")
    lease = await store.grant_lease(1)
    assert lease != 0
    await store.put(key, b"alive", lease=lease)
    assert await store.keepalive_once(lease) >= 1
    kv = await store.get(key)
    assert kv is not None
    assert kv.lease == lease

    async def gone() -> bool:
        return await store.get(key) is None

    await eventually(env, gone, 6)
    assert await store.keepalive_once(lease) == 0
    with pytest.raises(LeaseNotFound):
        await store.put(key, b"late", lease=lease)
    await store.revoke_lease(lease)


@case()
async def keepalive_extends_the_lease(env: Env) -> None:
    store, key = env.store, env.key("kept")
    lease = await store.grant_lease(3)
    await store.put(key, b"alive", lease=lease)
    await env.elapse(2)
    assert await store.keepalive_once(lease) == 3
    await env.elapse(2)  # 4 s after the grant, 2 s after the keepalive
    kv = await store.get(key)
    assert kv is not None
    assert kv.lease == lease
    await store.revoke_lease(lease)


@case()
async def revoke_deletes_every_key_at_one_revision(env: Env) -> None:
    store, key = env.store, env.key
    lease = await store.grant_lease(30)
    await store.put(key("b"), b"1", lease=lease)
    await store.put(key("a"), b"2", lease=lease)
    await store.put(key("plain"), b"3")
    before = await store.revision()
    async with watching(env, before + 1) as (queue, _):
        await store.revoke_lease(lease)
        assert await store.revision() == before + 1
        batch = await next_batch(queue)
    assert shape(batch) == [("delete", key("a"), before + 1), ("delete", key("b"), before + 1)]
    assert await store.get(key("a")) is None
    assert await store.get(key("plain")) is not None
    await store.revoke_lease(lease)  # twice is fine
    empty = await store.grant_lease(30)
    await store.revoke_lease(empty)  # a lease without keys: nothing to delete, no revision
    assert await store.revision() == before + 1


@case()
async def put_without_lease_detaches_the_key(env: Env) -> None:
    store, key = env.store, env.key("detached")
    lease = await store.grant_lease(30)
    await store.put(key, b"leased", lease=lease)
    await store.put(key, b"mine now")
    kv = await store.get(key)
    assert kv is not None
    assert kv.lease == 0
    await store.revoke_lease(lease)
    assert await store.get(key) is not None


# -- watches ----------------------------------------------------------------------------------


@case()
async def watch_replays_history_one_batch_per_revision(env: Env) -> None:
    store, key = env.store, env.key
    start = await store.revision() + 1
    one = await store.put(key("a"), b"1")
    both = await store.txn([Put(key("b"), b"2"), Put(key("c"), b"3")])
    gone = await store.delete(key("a"))
    await store.put(env.prefix.rstrip("/") + "x/a", b"another prefix")
    async with watching(env, start) as (queue, progress):
        batches = [await next_batch(queue) for _ in range(3)]
    assert [shape(b) for b in batches] == [
        [("put", key("a"), one)],
        [("put", key("b"), both.revision), ("put", key("c"), both.revision)],
        [("delete", key("a"), gone)],
    ]
    put = batches[1][0]
    assert (put.value, put.create_revision, put.version, put.lease) == (b"2", both.revision, 1, 0)
    deleted = batches[2][0]
    assert deleted.value == b""
    assert progress  # the stream reported itself established
    assert progress[0] >= gone


@case()
async def watch_follows_live_changes_and_resumes(env: Env) -> None:
    store, key = env.store, env.key
    start = await store.revision() + 1
    async with watching(env, start) as (queue, progress):
        assert progress[0] == start - 1  # established at the store's revision
        first = await store.put(key("a"), b"1")
        assert shape(await next_batch(queue)) == [("put", key("a"), first)]
        second = await store.put(key("a"), b"2")
        changed = await next_batch(queue)
    assert shape(changed) == [("put", key("a"), second)]
    assert changed[0].version == 2
    third = await store.put(key("b"), b"3")
    async with watching(env, first + 1) as (queue, _):  # resume after the first batch
        assert shape(await next_batch(queue)) == [("put", key("a"), second)]
        assert shape(await next_batch(queue)) == [("put", key("b"), third)]


@case()
async def watch_sees_lease_expiry_as_deletes(env: Env) -> None:
    store, key = env.store, env.key("expiring")
    lease = await store.grant_lease(1)
    put = await store.put(key, b"x", lease=lease)
    async with watching(env, put + 1) as (queue, _):

        async def gone() -> bool:
            return await store.get(key) is None

        await eventually(env, gone, 6)
        batch = await next_batch(queue)
    assert [(c.kind, c.key) for c in batch] == [("delete", key)]
    assert batch[0].mod_revision > put


@case(fresh=True)
async def compaction_ends_watches_from_before_it(env: Env) -> None:
    store, key = env.store, env.key
    for i in range(3):
        await store.put(key(str(i)), b"x")
    head = await store.revision()
    await store.compact(head)
    await store.compact(head - 1)  # already compacted: no error
    with pytest.raises(StoreError) as future:
        await store.compact(head + 100)
    assert not isinstance(future.value, StoreUnavailable)
    async with watching(env, 1) as (queue, _):
        with pytest.raises(Compacted) as caught:
            await next_batch(queue)
    assert caught.value.compact_revision == head
    async with watching(env, head) as (queue, _):  # the compacted revision itself is kept
        assert shape(await next_batch(queue)) == [("put", key("2"), head)]
    _, kvs = await store.list_prefix(env.prefix)
    assert len(kvs) == 3  # compaction drops history, not keys


@case()
async def an_exact_range_is_one_key_and_nothing_that_starts_with_it(env: Env) -> None:
    store, key = env.store, env.key
    start = await store.revision() + 1
    async with watching(env, start, KeyRange.exact(key("route"))) as (queue, _):
        await store.put(key("route2"), b"longer key")
        await store.put(key("route/sub"), b"below it")
        mine = await store.put(key("route"), b"the key")
        assert shape(await next_batch(queue)) == [("put", key("route"), mine)]
        gone = await store.delete(key("route"))
        assert shape(await next_batch(queue)) == [("delete", key("route"), gone)]
        assert queue.empty()


@case()
async def several_watches_run_side_by_side_each_on_its_own_range(env: Env) -> None:
    store, key = env.store, env.key
    start = await store.revision() + 1
    flags, route = KeyRange.prefix(key("flags/")), KeyRange.exact(key("routes/a"))
    async with (
        watching(env, start, flags) as (flag_events, _),
        watching(env, start, route) as (route_events, _),
    ):
        both = await store.txn([Put(key("flags/x"), b"1"), Put(key("routes/a"), b"2")])
        other = await store.put(key("routes/b"), b"not watched")
        f = await store.put(key("flags/y"), b"3")
        assert shape(await next_batch(flag_events)) == [("put", key("flags/x"), both.revision)]
        assert shape(await next_batch(flag_events)) == [("put", key("flags/y"), f)]
        # a transaction over two ranges reaches each watch with its own part of it
        assert shape(await next_batch(route_events)) == [("put", key("routes/a"), both.revision)]
        assert other > both.revision
        async with watching(env, start, route) as (again, _):  # a third, from history
            assert shape(await next_batch(again)) == [("put", key("routes/a"), both.revision)]
        r = await store.put(key("routes/a"), b"4")  # the first two go on after it left
        assert shape(await next_batch(route_events)) == [("put", key("routes/a"), r)]
        assert flag_events.empty()


@case()
async def list_ranges_reads_every_range_at_one_revision(env: Env) -> None:
    store, key = env.store, env.key
    await store.put(key("flags/b"), b"b")
    await store.put(key("flags/a"), b"a")
    await store.put(key("route"), b"r")
    await store.put(key("route2"), b"not this one")
    ranges = [
        KeyRange.prefix(key("flags/")),
        KeyRange.exact(key("route")),
        KeyRange.exact(key("missing")),
    ]
    revision, listed = await store.list_ranges(ranges)
    assert revision == await store.revision()
    assert [[kv.key for kv in kvs] for kvs in listed] == [
        [key("flags/a"), key("flags/b")],
        [key("route")],
        [],
    ]
    assert (await store.list_ranges([]))[1] == []
    with pytest.raises(ValueError, match="ranges in one read"):
        await store.list_ranges([KeyRange.exact(key(str(i))) for i in range(65)])


@case(fresh=True)
async def a_compacted_watch_ends_alone_and_the_others_go_on(env: Env) -> None:
    store, key = env.store, env.key
    await store.put(key("old"), b"x")
    head = await store.put(key("old"), b"y")
    live = KeyRange.prefix(key("live/"))
    async with watching(env, head + 1, live) as (events, _):
        await store.compact(head)
        async with watching(env, 1, KeyRange.exact(key("old"))) as (stale, _):
            with pytest.raises(Compacted):
                await next_batch(stale)
        after = await store.put(key("live/a"), b"still watched")
        assert shape(await next_batch(events)) == [("put", key("live/a"), after)]


# -- failures ---------------------------------------------------------------------------------


@case()
async def closed_store_refuses_everything(env: Env) -> None:
    store = env.store
    await store.put(env.key("a"), b"x")
    await store.close()
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.get(env.key("a")),
        lambda: store.list_prefix(env.prefix),
        store.revision,
        store.connect,
        lambda: store.put(env.key("a"), b"y"),
        lambda: store.delete(env.key("a")),
        lambda: store.txn([Put(env.key("b"), b"y")]),
        lambda: store.grant_lease(5),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable):
            await call()
    with pytest.raises(StoreUnavailable):
        async for _ in store.watch(env.prefix, 1):
            pass


@case()
async def close_ends_a_running_watch(env: Env) -> None:
    start = await env.store.revision() + 1
    async with watching(env, start) as (queue, _):
        await env.store.close()
        with pytest.raises(StoreUnavailable):
            await next_batch(queue)


@case(fresh=True)
async def outage_fails_calls_breaks_watches_and_applies_nothing(env: Env) -> None:
    store, key = env.store, env.key
    await store.connect()
    last = await store.put(key("a"), b"before")
    async with watching(env, last + 1) as (queue, _):
        await env.outage()
        with pytest.raises(StoreUnavailable):
            await next_batch(queue)
    with pytest.raises(StoreUnavailable):
        await store.get(key("a"))
    with pytest.raises(StoreUnavailable):
        await store.put(key("b"), b"during")
    with pytest.raises(StoreUnavailable):
        await store.txn([Put(key("c"), b"during", 0)])
    await env.recover()
    assert await store.revision() == last  # nothing written while it was down
    assert await store.get(key("b")) is None
    async with watching(env, last + 1) as (queue, _):  # resume where the broken watch was
        after = await store.put(key("a"), b"after")
        assert shape(await next_batch(queue)) == [("put", key("a"), after)]
    assert after == last + 1
