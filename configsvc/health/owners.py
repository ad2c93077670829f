"""The console's view of every agent's health, wherever it is held (``OwnerHealth``).

An agent's beats go to its owner replicas only (``configsvc.health.replicas``), so a replica
draws the agents it holds from its own windows and asks the owners for the rest: one request per
group of agents that share their owners (``GET /v1/health/agents``), whatever the number of
agents, once per console tick -- never per page view or per viewer. The first owner that answers
for the whole group counts; when none does, each agent of the group is shown from this replica's
own view (its sidecars' etcd presence, no figures) with ``unreachable`` saying why.

A background tick has no caller whose credentials it could forward: it presents the replica
token (``configsvc.http.tokens.replica_token``), derived from the console secret the replicas
behind one console share.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

from configsvc.health.figures import AgentHealth, local_health
from configsvc.health.fleet import FleetHealth
from configsvc.health.peers import PeerError, Peers
from configsvc.health.replicas import ReplicaSet


class OwnerHealth:
    def __init__(
        self,
        fleet: FleetHealth,
        replicas: ReplicaSet | None = None,
        peers: Peers | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.fleet = fleet
        self.replicas = replicas
        self.peers = peers
        self.headers = dict(headers or {})
        self.asked = 0  # requests to other replicas
        self.failed = 0  # of which no answer came

    def holds(self, agent: str) -> bool:
        return self.replicas is None or self.peers is None or self.replicas.holds(agent)

    def local(self, agent: str, now: float, *, shadows: bool = True) -> AgentHealth:
        replica = self.replicas.replica if self.replicas is not None else ""
        return local_health(self.fleet, agent, now, shadows=shadows, replica=replica)

    async def gather(
        self, agents: Sequence[str], now: float, shadows: Callable[[str], bool]
    ) -> dict[str, AgentHealth]:
        """Every agent's health: from this replica's windows, or from its owners."""
        out: dict[str, AgentHealth] = {}
        elsewhere: dict[tuple[str, ...], list[str]] = {}
        for agent in agents:
            if self.holds(agent):
                out[agent] = self.local(agent, now, shadows=shadows(agent))
            else:
                assert self.replicas is not None
                owners = tuple(m.replica for m in self.replicas.owners(agent))
                elsewhere.setdefault(owners, []).append(agent)
        answered = await asyncio.gather(
            *(self._ask(owners, group) for owners, group in elsewhere.items())
        )
        for found in answered:
            out.update(found)
        return out

    async def _ask(self, owners: tuple[str, ...], agents: list[str]) -> dict[str, AgentHealth]:
        assert self.replicas is not None
        assert self.peers is not None
        members = self.replicas.members
        errors: list[str] = []
        for replica in owners:
            member = members.get(replica)
            if member is None:
                continue
            self.asked += 1
            try:
                found = await self.peers.health(member, agents, self.headers)
            except PeerError as exc:
                self.failed += 1
                errors.append(str(exc))
                continue
            if all(a in found for a in agents):
                return found
            errors.append(f"replica {replica} left out some agents")
        why = "; ".join(errors) or "no owner replica is registered"
        if " answered 401" in why:
            why += " (the replicas must share $HOLDFAST_CONSOLE_SECRET)"
        return {a: AgentHealth(beats=tuple(self.fleet.beats(a)), unreachable=why) for a in agents}
