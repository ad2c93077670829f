"""``GET /v1/status[?agent=A]``: each agent's releases at a glance, from the fleet's health.

Windows: last 1 minute, last 5 minutes, and since the release started; canary against stable
over the last minute; each running rollout's health-gate verdict.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from configsvc.health.fleet import FleetHealth
from configsvc.health.gate import PolicyGate
from configsvc.http import name, reply
from configsvc.rollouts import RolloutOps
from holdfast.keyspace import Route

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
    def __init__(self, ops: RolloutOps, fleet: FleetHealth, gate: PolicyGate) -> None:
        self.ops = ops
        self.fleet = fleet
        self.gate = gate

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
        return body

    async def status(self, request: web.Request) -> web.Response:
        agent = request.query.get("agent")
        if agent is not None:
            agent = name(agent, what="agent", param="agent")
            route = (await self.ops.service.get_route(agent)).record
            return reply({"agents": [self.agent_status(route)]})
        routes = sorted(await self.ops.routes(), key=lambda r: r.agent)
        return reply({"agents": [self.agent_status(r) for r in routes]})

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/status", self.status)]
