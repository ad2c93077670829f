"""configsvc's fleet view: presence changes are taken one key at a time, and one agent's
sidecars are found without a walk over the fleet's."""

from __future__ import annotations

import asyncio

from configsvc.health.fleet import FleetHealth
from holdfast.keyspace import HealthSnapshot, Keyspace
from holdfast.store.memory import MemoryStore


def snap(sidecar: str, agent: str, at: float = 1.0) -> HealthSnapshot:
    return HealthSnapshot(sidecar_id=sidecar, agent=agent, at=at, started_at=1.0, config_revision=1)


async def until(check: object, within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():  # type: ignore[operator]
        assert loop.time() < deadline, "the fleet view did not catch up"
        await asyncio.sleep(0.01)


def test_presence_comes_and_goes_per_key_and_agents_are_indexed() -> None:
    async def run() -> None:
        store, ks = MemoryStore(), Keyspace("t")
        fleet = FleetHealth(store, ks)
        await store.put(ks.health("a1"), snap("a1", "alpha").encode())
        await fleet.start()
        try:
            await until(lambda: len(fleet.latest("alpha")) == 1)  # the first sync (a reset)
            for sidecar, agent in (("a2", "alpha"), ("b1", "beta"), ("b2", "beta")):
                await store.put(ks.health(sidecar), snap(sidecar, agent).encode())
            await until(lambda: len(fleet.latest("beta")) == 2)
            assert sorted(s.sidecar_id for s in fleet.latest("alpha")) == ["a1", "a2"]
            assert fleet.latest("gamma") == []
            await store.delete(ks.health("a1"))
            await until(lambda: [s.sidecar_id for s in fleet.latest("alpha")] == ["a2"])
            assert sorted(b.sidecar_id for b in fleet.beats("beta")) == ["b1", "b2"]
            assert sorted(b.sidecar_id for b in fleet.beats()) == ["a2", "b1", "b2"]
            fleet.ingest(snap("b1", "beta", at=5.0))  # a beat over HTTP: newer
            assert {s.sidecar_id: s.at for s in fleet.latest("beta")} == {"b1": 5.0, "b2": 1.0}
            await store.delete(ks.health("b1"))
            await store.delete(ks.health("b2"))
            await until(lambda: fleet.latest("beta") == [])
        finally:
            await fleet.close()

    asyncio.run(run())
