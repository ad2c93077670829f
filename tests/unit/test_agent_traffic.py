"""What configsvc judges a route change by: the agent's traffic, from this replica's fleet view
and the owners' beats, with no listing of every sidecar's presence in etcd per call."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from configsvc.releases import ConfigService
from holdfast.keyspace import HealthSnapshot, Keyspace
from holdfast.store import KeyValue
from holdfast.store.memory import MemoryStore


class Listings(MemoryStore):
    """MemoryStore that notes every prefix it was asked to list."""

    def __init__(self) -> None:
        super().__init__()
        self.listed: list[str] = []

    async def list_prefix(self, prefix: str) -> tuple[int, list[KeyValue]]:
        self.listed.append(prefix)
        return await super().list_prefix(prefix)


def snap(sidecar: str, agent: str, at: float, **traffic: int) -> HealthSnapshot:
    return HealthSnapshot(
        sidecar_id=sidecar, agent=agent, at=at, started_at=0.0, config_revision=1,
        traffic=traffic,
    )  # fmt: skip


class Beats:
    def __init__(self, present: list[HealthSnapshot], owners: list[HealthSnapshot]) -> None:
        self._present, self._owners = present, owners

    async def latest(self, agent: str, headers: Mapping[str, str]) -> list[HealthSnapshot]:
        return [s for s in self._owners if s.agent == agent]

    def present(self, agent: str) -> list[HealthSnapshot]:
        return [s for s in self._present if s.agent == agent]


def test_traffic_is_summed_from_the_fleet_view_and_the_owners_without_listing_etcd() -> None:
    store = Listings()
    service = ConfigService(store, Keyspace("t"))
    # presence here: a sidecar without a replica (a), one whose newer beat an owner has (b),
    # another agent's (c)
    present = [snap("a", "bot", 5.0, chat=2), snap("b", "bot", 5.0, chat=100),
               snap("c", "other", 5.0, chat=7)]  # fmt: skip
    owners = [snap("b", "bot", 9.0, chat=3, messages=1), snap("d", "bot", 9.0, chat=4)]
    service.read_beats_from(Beats(present, owners), {})
    total = asyncio.run(service.agent_traffic("bot"))
    assert total == {"chat": 2 + 3 + 4, "messages": 1}
    assert store.listed == []  # O(fleet) per call no more


def test_without_a_fleet_view_etcd_presence_is_read() -> None:
    store = Listings()
    keyspace = Keyspace("t")
    service = ConfigService(store, keyspace)

    async def run() -> dict[str, int]:
        await store.put(keyspace.health("a"), snap("a", "bot", 1.0, chat=5).encode())
        await store.put(keyspace.health("c"), snap("c", "other", 1.0, chat=9).encode())
        return await service.agent_traffic("bot")

    assert asyncio.run(run()) == {"chat": 5}
    assert store.listed == [keyspace.kind_prefix("health")]
