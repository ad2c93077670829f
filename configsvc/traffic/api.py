"""HTTP handlers of canary, blue-green switch, shadow and pins, under ``/v1/agents/{agent}/``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from configsvc import errors
from configsvc.http import actor_of, agent_of, read_body, reply
from configsvc.releases import migration_mismatch
from configsvc.traffic.ops import TrafficOps
from configsvc.traffic.payloads import (
    MigratePins,
    PinsQuery,
    Reason,
    ReportQuery,
    SetCanary,
    SetShadow,
    Switch,
    session_id,
)
from configsvc.traffic.pins import PinOps, Selection


class TrafficApi:
    def __init__(self, ops: TrafficOps, pins: PinOps) -> None:
        self.ops = ops
        self.pins = pins

    async def set_canary(self, request: web.Request) -> web.Response:
        agent, actor = agent_of(request), actor_of(request)
        req = SetCanary.parse(await read_body(request))
        return reply((await self.ops.set_canary(agent, req, actor)).to_json())

    async def clear_canary(self, request: web.Request) -> web.Response:
        agent, actor = agent_of(request), actor_of(request)
        req = Reason.parse(await read_body(request))
        return reply((await self.ops.clear_canary(agent, req.reason, actor)).to_json())

    async def switch(self, request: web.Request) -> web.Response:
        agent, actor = agent_of(request), actor_of(request)
        req = Switch.parse(await read_body(request))
        result = await self.ops.switch(agent, req, actor)
        migration = None
        if result.migration is not None and result.selection is not None:
            migration = result.migration.to_json(result.selection)
        return reply({**result.change.to_json(), "probe": result.probe, "migration": migration})

    async def set_shadow(self, request: web.Request) -> web.Response:
        agent, actor = agent_of(request), actor_of(request)
        req = SetShadow.parse(await read_body(request))
        return reply((await self.ops.set_shadow(agent, req, actor)).to_json())

    async def clear_shadow(self, request: web.Request) -> web.Response:
        agent, actor = agent_of(request), actor_of(request)
        req = Reason.parse(await read_body(request))
        return reply((await self.ops.clear_shadow(agent, req.reason, actor)).to_json())

    async def shadow_report(self, request: web.Request) -> web.Response:
        agent = agent_of(request)
        query = ReportQuery.parse(request.query)
        return reply(await self.ops.shadow_report(agent, query, request.headers))

    async def list_pins(self, request: web.Request) -> web.Response:
        agent = agent_of(request)
        query = PinsQuery.parse(request.query)
        await self.pins.require_agent(agent)
        revision, pins = await self.pins.list_pins(agent)
        matching = [p for p in pins if not query.release or p.pin.release == query.release]
        shown = matching[: query.limit]
        body: dict[str, Any] = {
            "agent": agent,
            "revision": revision,
            "release": query.release or None,
            "total": len(matching),
            "truncated": len(matching) > len(shown),
            "pins": [p.to_json() for p in shown],
        }
        return reply(body)

    async def show_pin(self, request: web.Request) -> web.Response:
        agent = agent_of(request)
        session = session_id(request.match_info["session"])
        await self.pins.require_agent(agent)
        return reply({"pin": (await self.pins.show(agent, session)).to_json()})

    async def migrate_pins(self, request: web.Request) -> web.Response:
        agent, actor = agent_of(request), actor_of(request)
        req = MigratePins.parse(await read_body(request))
        service = self.ops.service
        await self.pins.require_agent(agent)
        # releases are never deleted: check once
        source = (await service.get_release(agent, req.source)).record
        target = (await service.get_release(agent, req.target)).record
        problem = migration_mismatch(source, target, await service.agent_traffic(agent))
        if problem and not req.allow_provider_change:
            raise errors.ProviderMismatch(problem, param="to")
        selection = Selection(
            agent=agent,
            target=req.target,
            source=req.source,
            session=req.session,
            percent=req.percent,
        )
        migration = await self.pins.migrate(selection, actor, req.reason)
        return reply(migration.to_json(selection))

    def routes(self) -> list[web.RouteDef]:
        agent = "/v1/agents/{agent}"
        return [
            web.put(f"{agent}/canary", self.set_canary),
            web.delete(f"{agent}/canary", self.clear_canary),
            web.post(f"{agent}/switch", self.switch),
            web.put(f"{agent}/shadow", self.set_shadow),
            web.delete(f"{agent}/shadow", self.clear_shadow),
            web.get(f"{agent}/shadow/report", self.shadow_report),
            web.get(f"{agent}/pins", self.list_pins),
            web.post(f"{agent}/pins/migrate", self.migrate_pins),
            web.get(f"{agent}/pins/{{session}}", self.show_pin),
        ]
