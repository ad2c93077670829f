"""The newest beats of an agent's sidecars, from the replica that holds them: this one, or an
owner asked over HTTP (``configsvc.traffic``'s shadow report reads them through this)."""

from __future__ import annotations

from collections.abc import Mapping

from configsvc.health.fleet import FleetHealth
from configsvc.health.peers import PeerError, Peers
from configsvc.health.replicas import ReplicaSet
from holdfast.keyspace import HealthSnapshot
from holdfast.logs import get_logger

log = get_logger(__name__)


class OwnerBeats:
    def __init__(self, fleet: FleetHealth, replicas: ReplicaSet, peers: Peers) -> None:
        self.fleet = fleet
        self.replicas = replicas
        self.peers = peers

    async def latest(self, agent: str, headers: Mapping[str, str]) -> list[HealthSnapshot]:
        if self.replicas.holds(agent):
            return self.fleet.latest(agent)
        for member in self.replicas.owners(agent):
            try:
                return await self.peers.snapshots(member, agent, headers)
            except PeerError as exc:
                log.warning("health_owner_unreachable", agent=agent, error=str(exc))
        return []  # the etcd presence snapshots are all there is

    def present(self, agent: str) -> list[HealthSnapshot]:
        return self.fleet.latest(agent)
