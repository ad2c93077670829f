"""``GET /v1/status[?agent=A]``: each agent's releases at a glance, from the fleet's health.

Windows: last 1 minute, last 5 minutes, and since the release started; canary against stable
over the last minute; each running rollout's health-gate verdict.

An agent's health is held by its owner replicas (``configsvc.health.replicas``): any replica
answers, asking an owner for the agents it does not hold (one request per owner, whatever the
number of agents), and says which replica the figures came from (``health_replica``). When no
owner answers, the body is this replica's own view (the sidecars' etcd presence only) and
``health_unreachable`` says why.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from configsvc.errors import InvalidRequest
from configsvc.health.fleet import FleetHealth
from configsvc.health.gate import PolicyGate
from configsvc.health.peers import PeerError, Peers
from configsvc.health.replicas import ReplicaSet
from configsvc.http import name, reply
from configsvc.rollouts import RolloutOps
from holdfast.keyspace import Route

MAX_AGENTS_PER_QUERY = 1000

COMPARED = ("error_rate", "p95_ms", "tokens_per_answer", "cost_per_request", "violation_rate")


def comparison(canary: dict[str, Any], stable: dict[str, Any]) -> dict[str, Any]:
    """Canary minus stable (rates) or canary over stable (the rest), where both are known."""
    out: dict[str, Any] = {}
    for field in COMPARED:
        c, s = canary.get(field), stable.get(field)
        if c is None or s is None:
            out[field] = None
        elif field.endswith("_rate"):
            out[field] = {"delta": c - s}
        else:
            out[field] = {"ratio": c / s if s else None}
    return out


class StatusApi:
    def __init__(
        self,
        ops: RolloutOps,
        fleet: FleetHealth,
        gate: PolicyGate,
        replicas: ReplicaSet | None = None,
        peers: Peers | None = None,
    ) -> None:
        self.ops = ops
        self.fleet = fleet
        self.gate = gate
        self.replicas = replicas
        self.peers = peers
        self.replica = replicas.replica if replicas is not None else ""

    def agent_status(self, route: Route) -> dict[str, Any]:
        canary = route.canary if route.canary_percent > 0 else ""
        body = self.fleet.status(route.agent, route.stable, canary)
        body["stable"], body["canary"] = route.stable, canary or None
        body["canary_percent"] = route.canary_percent
        releases = body["releases"]
        if canary and canary in releases:
            body["canary_vs_stable"] = comparison(
                releases[canary]["windows"]["1m"], releases[route.stable]["windows"]["1m"]
            )
        else:
            body["canary_vs_stable"] = None
        rollout = route.rollout
        body["rollout"] = (
            {"release": rollout.release, "state": rollout.state, "percent": rollout.percent}
            if rollout is not None
            else None
        )
        body["health_gate"] = (
            self.gate.report(route.agent, rollout, route.stable)
            if rollout is not None and rollout.active
            else None
        )
        body["health_replica"] = self.replica or None
        return body

    async def status(self, request: web.Request) -> web.Response:
        asked = request.query.getall("agent", [])
        if len(asked) > MAX_AGENTS_PER_QUERY:
            raise InvalidRequest(f"at most {MAX_AGENTS_PER_QUERY} agents", param="agent")
        local = request.query.get("local", "0")
        if local not in ("0", "1"):
            raise InvalidRequest("local must be 0 or 1", param="local")
        if len(asked) == 1:
            agent = name(asked[0], what="agent", param="agent")
            routes = [(await self.ops.service.get_route(agent)).record]
        elif asked:  # a replica asking for the agents it does not hold: one read for all
            agents = [name(a, what="agent", param="agent") for a in asked]
            known = {r.agent: r for r in await self.ops.routes()}
            for agent in agents:
                if agent not in known:
                    await self.ops.service.get_route(agent)  # the usual 404, by name
            routes = [known[a] for a in agents]
        else:
            routes = sorted(await self.ops.routes(), key=lambda r: r.agent)
        if local == "1" or self.replicas is None or self.peers is None:
            return reply({"agents": [self.agent_status(r) for r in routes]})
        return reply({"agents": await self._gathered(routes, request.headers)})

    async def _gathered(
        self, routes: Sequence[Route], headers: Mapping[str, str]
    ) -> list[dict[str, Any]]:
        """Each agent's status from a replica that holds its health: this one, or its owners."""
        assert self.replicas is not None
        bodies: dict[str, dict[str, Any]] = {}
        elsewhere: dict[tuple[str, ...], list[Route]] = {}
        for route in routes:
            if self.replicas.holds(route.agent):
                bodies[route.agent] = self.agent_status(route)
            else:
                owners = tuple(m.replica for m in self.replicas.owners(route.agent))
                elsewhere.setdefault(owners, []).append(route)
        asked = await asyncio.gather(
            *(self._ask(owners, group, headers) for owners, group in elsewhere.items())
        )
        for answered in asked:
            bodies.update(answered)
        return [bodies[r.agent] for r in routes]

    async def _ask(
        self, owners: tuple[str, ...], routes: Sequence[Route], headers: Mapping[str, str]
    ) -> dict[str, dict[str, Any]]:
        assert self.replicas is not None
        assert self.peers is not None
        members = self.replicas.members
        agents = [r.agent for r in routes]
        errors: list[str] = []
        for replica in owners:
            member = members.get(replica)
            if member is None:
                continue
            try:
                found = await self.peers.status(member, agents, headers)
            except PeerError as exc:
                errors.append(str(exc))
                continue
            if all(a in found for a in agents):
                return found
            errors.append(f"replica {replica} left out some agents")
        out = {}
        for route in routes:
            body = self.agent_status(route)
            body["health_unreachable"] = "; ".join(errors) or "no owner replica is registered"
            out[route.agent] = body
        return out

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/status", self.status)]
