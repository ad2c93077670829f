"""Tier 3: a 3-member cluster loses members under a stream of writes; nothing is lost or doubled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from holdfast.keyspace import Keyspace
from holdfast.store import StoreUnavailable
from holdfast.store.etcd import EtcdStore
from holdfast_devtools.etcd_cluster import EtcdCluster
from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.test_mirror import Recorder, StarvedProbes, fast_mirror, listed, until

pytestmark = pytest.mark.etcd
PREFIX = Keyspace("failover").prefix
WRITES = 60


async def write_stream(store: EtcdStore, halfway: asyncio.Event) -> dict[str, int]:
    """Put WRITES distinct keys, retrying each until it is known to be written."""
    written: dict[str, int] = {}
    for i in range(WRITES):
        key = f"{PREFIX}flags/k{i:03d}"
        while key not in written:
            try:
                written[key] = await store.put(key, str(i).encode())
            except StoreUnavailable:  # outcome unknown: the retry may write the key twice
                await asyncio.sleep(0.05)
        if i == WRITES // 2:
            halfway.set()
        await asyncio.sleep(0.01)
    return written


async def survive(
    cluster: EtcdCluster,
    mirror_endpoints: list[str],
    fault: Callable[[], EtcdNode],
) -> tuple[EtcdStore, EtcdNode]:
    writer = EtcdStore(cluster.endpoints, timeout=2.0)
    watched = EtcdStore(mirror_endpoints, timeout=2.0)
    reader = EtcdStore(cluster.endpoints)
    rec = Recorder()
    mirror = fast_mirror(watched, PREFIX)
    mirror.subscribe(rec)
    try:
        await mirror.start()
        assert await mirror.wait_synced(10)
        await until(lambda: mirror.connected, 10, "the watch is established")
        halfway = asyncio.Event()
        writes = asyncio.create_task(write_stream(writer, halfway))
        await halfway.wait()
        victim = await asyncio.to_thread(fault)
        for _ in range(5):  # reads keep working through the fault
            await reader.list_prefix(PREFIX)
            await watched.revision()
        written = await asyncio.wait_for(writes, 60)
        await until(lambda: set(written) <= set(mirror.state), 20, "every write reaches the mirror")
        deltas = rec.delta_revisions()
        assert len(deltas) == len(set(deltas))
        assert set(written.values()) <= set(deltas)
        assert rec.state == await listed(reader, PREFIX)
        assert mirror.resyncs == 0
        return watched, victim
    finally:
        await mirror.close()
        for store in (writer, watched, reader):
            await store.close()


async def test_leader_killed_under_writes(etcd_cluster: EtcdCluster) -> None:
    await survive(etcd_cluster, etcd_cluster.endpoints, etcd_cluster.kill_leader)


def _follower_first(cluster: EtcdCluster) -> tuple[EtcdNode, list[str]]:
    leader = cluster.leader()
    followers = [n for n in cluster.nodes if n is not leader]
    return followers[0], [n.client_url for n in [*followers, leader]]


async def test_connected_member_killed_under_writes(etcd_cluster: EtcdCluster) -> None:
    follower, endpoints = await asyncio.to_thread(_follower_first, etcd_cluster)

    def kill() -> EtcdNode:
        follower.kill()
        return follower

    watched, victim = await survive(etcd_cluster, endpoints, kill)
    assert victim.client_url == endpoints[0]
    assert watched.endpoint != victim.client_url  # the store failed over for good


async def test_connected_member_hung_under_writes(etcd_cluster: EtcdCluster) -> None:
    follower, endpoints = await asyncio.to_thread(_follower_first, etcd_cluster)

    def pause() -> EtcdNode:
        follower.pause()  # open sockets, no answers: only timeouts can tell
        return follower

    try:
        await survive(etcd_cluster, endpoints, pause)
    finally:
        follower.resume()


async def test_watch_on_a_member_that_lost_its_leader_fails_loudly(
    etcd_cluster: EtcdCluster,
) -> None:
    lonely = EtcdStore([etcd_cluster.nodes[0].client_url], timeout=2.0)
    established = asyncio.Event()

    async def follow() -> None:
        async for _ in lonely.watch(PREFIX, 0, on_progress=lambda _: established.set()):
            pass

    watch = asyncio.create_task(follow())
    try:
        await asyncio.wait_for(established.wait(), 10)
        for node in etcd_cluster.nodes[1:]:
            await asyncio.to_thread(node.kill)
        # Without the hasleader metadata this watch would stay open and silent forever.
        with pytest.raises(StoreUnavailable, match="no leader"):
            await asyncio.wait_for(watch, 15)
    finally:
        watch.cancel()
        await lonely.close()


async def test_a_probe_timed_out_by_a_starved_loop_neither_fails_over_nor_restarts_the_watch(
    etcd_cluster: EtcdCluster,
) -> None:
    """A deadline that passed while the process's own loop was busy says nothing of the
    member: the store stays on it (a failover would move every watch of the connection) and
    the mirror keeps its watch."""
    starving = StarvedProbes(etcd_cluster.endpoints, timeout=0.4)
    mirror = fast_mirror(starving, PREFIX)
    try:
        await mirror.start()
        assert await mirror.wait_synced(10)
        await until(lambda: mirror.connected, 10, "the watch is established")
        endpoint = starving.endpoint
        starving.block_s = 1.0
        await until(lambda: starving.failed_probes == 1, 5, "a probe fails on the starved loop")
        put = await starving.put(f"{PREFIX}flags/starved", b"1")
        await until(lambda: mirror.revision >= put, 5, "the watch still delivers")
        assert starving.endpoint == endpoint  # the old code failed over to the next member
        assert mirror.reconnects == 0
        assert mirror.probes_excused == 1
    finally:
        await mirror.close()
        await starving.close()
