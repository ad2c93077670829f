"""A real sidecar process publishes health/<sidecar-id> under a lease to a real etcd."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from holdfast.keyspace import HealthSnapshot, Keyspace, Release, Route, Shadow
from holdfast.store.errors import StoreError
from holdfast.store.etcd import EtcdStore
from holdfast_devtools import procs
from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import stable_is, wait_for

AGENT = "support"
KEY_VAR = "HEALTH_PROVIDER_KEY"
INTERVAL = "0.5"  # lease TTL: max(2, ceil(3 * 0.5)) = 2 s
TTL_S = 2.0
EPOCH = 1_700_000_000.0


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[procs.ManagedProcess]:
    proc = procs.fakellm(tmp_path_factory.mktemp("fake-health")).start()
    yield proc
    proc.stop()


@dataclass
class Setup:
    store: EtcdStore
    keyspace: Keyspace
    etcd_url: str
    fake: procs.ManagedProcess
    base: Path

    def start_sidecar(self, sidecar_id: str) -> procs.ManagedProcess:
        return procs.sidecar(
            self.base,
            AGENT,
            [self.etcd_url],
            self.keyspace.env,
            self.base / f"state-{sidecar_id}",
            "--sidecar-id",
            sidecar_id,
            "--health-interval",
            INTERVAL,
            name=sidecar_id,
            extra_env={KEY_VAR: "sk-any"},
        ).start()

    async def snapshot(self, sidecar_id: str) -> HealthSnapshot | None:
        kv = await self.store.get(self.keyspace.health(sidecar_id))
        return HealthSnapshot.decode(kv.value) if kv is not None else None


async def configure(store: EtcdStore, ks: Keyspace, fake_url: str) -> None:
    for name, model in (("r1", "model-one"), ("r2", "model-two")):
        release = Release(
            agent=AGENT, name=name, model=model, base_url=f"{fake_url}/v1", api_key_env=KEY_VAR
        )
        await store.put(ks.release(AGENT, name), release.encode())
    shadow = Shadow(release="r2", percent=100.0, since=EPOCH)
    route = Route(agent=AGENT, stable="r1", shadow=shadow, updated_at=time.time())
    await store.put(ks.route(AGENT), route.encode())


async def open_setup(node: EtcdNode, env: str, fake: procs.ManagedProcess, base: Path) -> Setup:
    store = EtcdStore([node.client_url], timeout=1.0)
    await store.connect()
    ks = Keyspace(env)
    await configure(store, ks, fake.url)
    return Setup(store, ks, node.client_url, fake, base)


@pytest.fixture
async def shared(
    etcd_node: EtcdNode, etcd_env: str, fake: procs.ManagedProcess, tmp_path: Path
) -> AsyncIterator[Setup]:
    setup = await open_setup(etcd_node, etcd_env, fake, tmp_path)
    yield setup
    await setup.store.close()


@pytest.fixture
async def dedicated(
    fresh_etcd: EtcdNode, etcd_env: str, fake: procs.ManagedProcess, tmp_path: Path
) -> AsyncIterator[Setup]:
    setup = await open_setup(fresh_etcd, etcd_env, fake, tmp_path)
    yield setup
    await setup.store.close()


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if await check():
                return
        except StoreError:
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_health_key_carries_shadow_stats_and_dies_with_the_sidecar(shared: Setup) -> None:
    sidecar = shared.start_sidecar("hs-1")
    try:
        await wait_for(f"{sidecar.url}/status", stable_is("r1"))
        async with aiohttp.ClientSession() as http:
            for _ in range(2):
                async with http.post(
                    f"{sidecar.url}/v1/chat/completions",
                    json={"model": AGENT, "messages": [{"role": "user", "content": "hi"}]},
                ) as resp:
                    assert resp.status == 200

        async def compared() -> bool:
            snap = await shared.snapshot("hs-1")
            return snap is not None and any(s.samples == 2 for s in snap.shadow)

        await until(compared, "two shadow samples in the health snapshot")
        kv = await shared.store.get(shared.keyspace.health("hs-1"))
        assert kv is not None and kv.lease != 0
        snap = HealthSnapshot.decode(kv.value)
        assert (snap.sidecar_id, snap.agent) == ("hs-1", AGENT)
        assert snap.config_revision > 0 and snap.at >= snap.started_at
        (stats,) = snap.shadow
        assert (stats.primary, stats.shadow, stats.epoch) == ("r1", "r2", EPOCH)
        assert 0.0 < stats.similarity_min < 1.0 and stats.shadow_errors == 0
    finally:
        sidecar.kill()  # SIGKILL: no goodbye, only the lease can remove the key
    killed = time.monotonic()

    async def gone() -> bool:
        return await shared.snapshot("hs-1") is None

    await until(gone, "the health key to expire", timeout=TTL_S + 3.0)
    # etcd checks expiry about every 500 ms; a key kept far past its TTL would be a bug.
    assert time.monotonic() - killed < TTL_S + 2.0


async def test_publishing_resumes_after_an_etcd_outage(
    dedicated: Setup, fresh_etcd: EtcdNode
) -> None:
    sidecar = dedicated.start_sidecar("hs-2")
    try:

        async def published() -> bool:
            return await dedicated.snapshot("hs-2") is not None

        await until(published, "the first health snapshot")
        fresh_etcd.stop()
        await asyncio.sleep(3.0)  # several beats fail meanwhile
        fresh_etcd.start().wait_ready()
        back = time.time()

        async def fresh() -> bool:
            snap = await dedicated.snapshot("hs-2")
            return snap is not None and snap.at > back

        await until(fresh, "a snapshot written after etcd came back", timeout=15.0)
        events = [e.get("event") for e in sidecar.log_events()]
        assert events.count("health_publish_failed") == 1  # once per outage, not per beat
        assert "health_publish_resumed" in events
    finally:
        sidecar.stop()


async def test_graceful_stop_removes_the_key_at_once(shared: Setup) -> None:
    sidecar = shared.start_sidecar("hs-3")

    async def published() -> bool:
        return await shared.snapshot("hs-3") is not None

    await until(published, "the first health snapshot")
    assert sidecar.stop() == 0
    assert await shared.snapshot("hs-3") is None  # revoked on the way out, not left to expire
