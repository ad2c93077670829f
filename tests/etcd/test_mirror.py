"""Tier 3: PrefixMirror and RangeMirror against a real etcd: sync, deltas, filters, restarts,
compaction (of the whole state, and of one range among several)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from holdfast.keyspace import Keyspace
from holdfast.store import KeyRange, Put
from holdfast.store.etcd import EtcdStore
from holdfast.store.mirror import MirrorUpdate, PrefixMirror, RangeMirror
from holdfast_devtools.etcd_local import EtcdNode

pytestmark = pytest.mark.etcd


def fast_mirror(
    store: EtcdStore, prefix: str, key_filter: Callable[[str], bool] | None = None
) -> PrefixMirror:
    """A mirror with short retries and probes, so that faults show within a test's patience."""
    return PrefixMirror(
        store, prefix, key_filter=key_filter, retry_initial=0.05, retry_max=0.3, probe_interval=0.1
    )


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)


@dataclass
class Recorder:
    """A subscriber that keeps its own state from the updates and checks their order."""

    updates: list[MirrorUpdate] = field(default_factory=list)
    state: dict[str, bytes] = field(default_factory=dict)

    def __call__(self, update: MirrorUpdate) -> None:
        if self.updates:
            assert update.revision > self.updates[-1].revision, "revisions must strictly increase"
        self.updates.append(update)
        if update.reset:
            assert not update.changes
            self.state = {k: kv.value for k, kv in update.kvs.items()}
        for change in update.changes:
            if change.kind == "put":
                self.state[change.key] = change.value
            else:
                self.state.pop(change.key, None)
        assert self.state == {k: kv.value for k, kv in update.kvs.items()}

    def delta_revisions(self) -> list[int]:
        return [u.revision for u in self.updates if not u.reset]


async def listed(store: EtcdStore, prefix: str) -> dict[str, bytes]:
    return {kv.key: kv.value for kv in (await store.list_prefix(prefix))[1]}


@contextlib.asynccontextmanager
async def running(mirror: RangeMirror) -> AsyncIterator[RangeMirror]:
    await mirror.start()
    try:
        assert await mirror.wait_synced(10)
        await until(lambda: mirror.connected, 10, "the watch is established")
        yield mirror
    finally:
        await mirror.close()


async def test_initial_reset_then_deltas(store: EtcdStore, etcd_env: str) -> None:
    ks = Keyspace(etcd_env)
    await store.put(ks.flag("a"), b"1")
    await store.put(ks.flag("b"), b"2")
    rec = Recorder()
    mirror = fast_mirror(store, ks.prefix)
    mirror.subscribe(rec)
    async with running(mirror):
        assert rec.updates[0].reset
        assert rec.state == {ks.flag("a"): b"1", ks.flag("b"): b"2"}
        put = await store.put(ks.flag("c"), b"3")
        both = await store.txn([Put(ks.flag("a"), b"1b"), Put(ks.flag("d"), b"4")])
        gone = await store.delete(ks.flag("b"))
        await until(lambda: mirror.revision == gone, 5, "the mirror catches up")
        assert rec.delta_revisions() == [put, both.revision, gone]
        assert [c.key for c in rec.updates[2].changes] == [ks.flag("a"), ks.flag("d")]
        assert rec.state == await listed(store, ks.prefix)
        assert dict(mirror.state) == {k: kv for k, kv in rec.updates[-1].kvs.items()}
        assert mirror.connected
        assert (mirror.resyncs, mirror.reconnects) == (0, 0)
        contact = mirror.last_contact
        assert contact is not None
        await until(lambda: (mirror.last_contact or 0) > contact, 2, "the probe refreshes contact")


async def test_key_filter_drops_keys_everywhere(store: EtcdStore, etcd_env: str) -> None:
    ks = Keyspace(etcd_env)
    await store.put(ks.health("other"), b"h")
    await store.put(ks.flag("a"), b"1")
    rec = Recorder()
    mirror = fast_mirror(store, ks.prefix, lambda k: "/health/" not in k)
    mirror.subscribe(rec)
    async with running(mirror):
        assert rec.state == {ks.flag("a"): b"1"}
        health = await store.put(ks.health("other"), b"h2")
        await until(lambda: mirror.revision == health, 5, "a filtered revision still counts")
        assert len(rec.updates) == 1  # nothing to tell subscribers
        flag = await store.put(ks.flag("b"), b"2")
        await until(lambda: mirror.revision == flag, 5, "the next flag arrives")
        assert rec.delta_revisions() == [flag]
        assert ks.health("other") not in mirror.state


async def test_subscribers_are_isolated(store: EtcdStore, etcd_env: str) -> None:
    ks = Keyspace(etcd_env)
    calls: list[int] = []

    def broken(update: MirrorUpdate) -> None:
        calls.append(update.revision)
        raise RuntimeError("subscriber bug")

    first, late, gone = Recorder(), Recorder(), Recorder()
    mirror = fast_mirror(store, ks.prefix)
    mirror.subscribe(broken)
    mirror.subscribe(first)
    unsubscribe = mirror.subscribe(gone)
    async with running(mirror):
        unsubscribe()
        rev = await store.put(ks.flag("a"), b"1")
        await until(lambda: first.state == {ks.flag("a"): b"1"}, 5, "the healthy one is served")
        mirror.subscribe(late)  # gets the current state at once
        assert late.updates[0].reset
        assert late.updates[0].revision == rev
        assert late.state == first.state
        assert len(calls) == 2  # the broken one is still called: reset and delta
        assert len(gone.updates) == 1


class CuttableProxy:
    """A TCP proxy whose link can be severed and healed, like a network partition."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.severed = False
        self._links: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.severed:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._links |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        self._links -= {writer, up_writer}

    def sever(self) -> None:
        self.severed = True
        for link in list(self._links):
            link.transport.abort()

    async def close(self) -> None:
        self.sever()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_resume_after_restart_loses_and_repeats_nothing(fresh_etcd: EtcdNode) -> None:
    prefix = Keyspace("restart").prefix
    writer = EtcdStore([fresh_etcd.client_url])
    proxy = CuttableProxy(int(fresh_etcd.client_url.rsplit(":", 1)[1]))
    await proxy.start()
    reader = EtcdStore([proxy.url], timeout=1.0)
    written = [await writer.put(prefix + "flags/before", b"0")]
    rec = Recorder()
    mirror = fast_mirror(reader, prefix)
    mirror.subscribe(rec)
    try:
        async with running(mirror):
            written.append(await writer.put(prefix + "flags/a", b"1"))
            await until(lambda: mirror.revision == written[-1], 5, "first delta")
            proxy.severed = True  # new connections only: holds the mirror off until healed
            await asyncio.to_thread(fresh_etcd.stop)
            await until(lambda: not mirror.connected, 5, "the mirror notices")
            contact = mirror.last_contact
            await asyncio.to_thread(lambda: fresh_etcd.start().wait_ready())
            # Written after etcd is back but before the mirror is: it must fetch them on resume.
            written.append(await writer.put(prefix + "flags/b", b"2"))
            written.append(await writer.delete(prefix + "flags/a"))
            assert not mirror.connected
            proxy.severed = False
            await until(lambda: mirror.revision == written[-1], 10, "resume after restart")
            written.append(await writer.put(prefix + "flags/c", b"3"))
            await until(lambda: mirror.revision == written[-1], 5, "live again")
            assert rec.delta_revisions() == written[1:]
            assert rec.state == await listed(writer, prefix)
            assert (mirror.resyncs, mirror.connected) == (0, True)
            assert mirror.reconnects >= 1
            assert (mirror.last_contact or 0) > (contact or 0)
    finally:
        await reader.close()
        await writer.close()


async def test_compaction_while_away_resyncs_the_whole_state(fresh_etcd: EtcdNode) -> None:
    prefix = Keyspace("compact").prefix
    writer = EtcdStore([fresh_etcd.client_url])
    proxy = CuttableProxy(int(fresh_etcd.client_url.rsplit(":", 1)[1]))
    await proxy.start()
    reader = EtcdStore([proxy.url], timeout=1.0)
    for name in ("a", "b", "c"):
        await writer.put(prefix + f"flags/{name}", name.encode())
    rec = Recorder()
    mirror = fast_mirror(reader, prefix)
    mirror.subscribe(rec)
    try:
        async with running(mirror):
            proxy.sever()
            await until(lambda: not mirror.connected, 5, "the mirror notices the partition")
            await writer.delete(prefix + "flags/a")
            await writer.put(prefix + "flags/b", b"b2")
            await writer.put(prefix + "flags/d", b"d")
            await writer.compact(await writer.revision())
            proxy.severed = False
            await until(lambda: mirror.resyncs == 1 and mirror.connected, 10, "resync")
            assert rec.updates[-1].reset
            assert rec.state == await listed(writer, prefix)
            assert prefix + "flags/a" not in mirror.state
            last = await writer.put(prefix + "flags/e", b"e")
            await until(lambda: mirror.revision == last, 5, "deltas flow after the resync")
            assert rec.state == await listed(writer, prefix)
    finally:
        await reader.close()
        await proxy.close()
        await writer.close()


async def test_ranges_resume_each_from_its_own_revision_and_only_a_compacted_one_is_relisted(
    fresh_etcd: EtcdNode,
) -> None:
    ks = Keyspace("ranges")
    flags, route = KeyRange.prefix(ks.kind_prefix("flags")), KeyRange.exact(ks.route("a"))
    writer = EtcdStore([fresh_etcd.client_url])
    proxy = CuttableProxy(int(fresh_etcd.client_url.rsplit(":", 1)[1]))
    await proxy.start()
    reader = EtcdStore([proxy.url], timeout=1.0)
    await writer.put(ks.flag("a"), b"1")
    await writer.put(ks.route("ab"), b"a longer key: not in the exact range")
    rec = Recorder()
    mirror = RangeMirror(
        reader, [flags, route], retry_initial=0.05, retry_max=0.3, probe_interval=0.1
    )
    mirror.subscribe(rec)

    def route_keys_received() -> int:
        return reader.traffic.by_dir.get(ks.kind_prefix("routes"), [0, 0])[0]

    try:
        async with running(mirror):
            assert rec.state == {ks.flag("a"): b"1"}
            flag = await writer.put(ks.flag("b"), b"2")
            last_route = await writer.put(ks.route("a"), b"r")  # the route range is newest
            await until(lambda: mirror.revision == last_route, 5, "both ranges follow")
            assert mirror.range_revisions() == {str(flags): flag, str(route): last_route}
            assert route_keys_received() == 1  # its one event; "routes/ab" never came
            proxy.sever()
            await until(lambda: not mirror.connected, 5, "the mirror notices the partition")
            # Compacted up to the route's next revision: the flags range (behind it) cannot
            # resume, the route range (at it) can.
            await writer.compact(await writer.delete(ks.flag("a")))
            await writer.put(ks.flag("c"), b"3")
            proxy.severed = False
            await until(lambda: mirror.resyncs == 1 and mirror.connected, 10, "resync")
            # flags (behind the compaction) were listed again; the route was not: it resumed
            assert route_keys_received() == 1
            assert rec.state == {ks.flag("b"): b"2", ks.flag("c"): b"3", ks.route("a"): b"r"}
            moved = await writer.put(ks.route("a"), b"r2")
            await until(lambda: mirror.revision == moved, 5, "the route's watch goes on")
            assert rec.state[ks.route("a")] == b"r2"
    finally:
        await reader.close()
        await proxy.close()
        await writer.close()


class StarvedProbes(EtcdStore):
    """A real store whose next liveness probe is created with its deadline, then finds the
    process's loop busy elsewhere (a blocking sleep) until that deadline has passed: the probe
    fails for want of CPU, not for want of etcd."""

    def __init__(self, endpoints: list[str], *, timeout: float) -> None:
        super().__init__(endpoints, timeout=timeout)
        self.block_s = 0.0
        self.failed_probes = 0

    async def revision(self) -> int:
        block, self.block_s = self.block_s, 0.0
        if not block:
            return await super().revision()
        call = asyncio.ensure_future(super().revision())
        await asyncio.sleep(0)  # the call is made, its deadline set
        time.sleep(block)  # noqa: ASYNC251 - the point: the loop is starved past that deadline
        try:
            return await call
        except Exception:
            self.failed_probes += 1
            raise


async def test_a_probe_failed_on_a_starved_loop_does_not_restart_the_watch(
    etcd_node: EtcdNode, etcd_env: str
) -> None:
    ks = Keyspace(etcd_env)
    starving = StarvedProbes([etcd_node.client_url], timeout=0.4)
    mirror = fast_mirror(starving, ks.prefix)
    try:
        async with running(mirror):
            starving.block_s = 1.0  # longer than the probe's whole budget
            await until(lambda: starving.failed_probes == 1, 5, "a probe fails on the starved loop")
            put = await starving.put(ks.flag("after"), b"1")
            await until(lambda: mirror.revision >= put, 5, "the watch still delivers")
            assert mirror.reconnects == 0  # the old code restarted the watch here
            assert mirror.probes_excused == 1
            assert mirror.resyncs == 0
            assert mirror.connected
    finally:
        await starving.close()


async def test_a_silent_store_still_restarts_the_watch_within_a_probe(
    fresh_etcd: EtcdNode, etcd_env: str
) -> None:
    """The other side of the excuse: with a punctual loop, a probe that etcd does not answer
    restarts the watch as before (here etcd stops answering, then comes back)."""
    ks = Keyspace(etcd_env)
    watched = EtcdStore([fresh_etcd.client_url], timeout=0.4)
    mirror = fast_mirror(watched, ks.prefix)
    try:
        async with running(mirror):
            fresh_etcd.pause()
            try:
                await until(lambda: not mirror.connected, 5, "the probe finds etcd silent")
            finally:
                fresh_etcd.resume()
            put = await watched.put(ks.flag("back"), b"1")
            await until(lambda: mirror.revision >= put, 10, "the watch resumes")
            assert mirror.reconnects >= 1
            assert mirror.probes_excused == 0
    finally:
        await watched.close()
