"""HTTP handlers of canary, blue-green switch, shadow and pins, under ``/v1/agents/{agent}/``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from configsvc.server.app import _actor, _agent, _json, change_json, read_body
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
        agent, actor = _agent(request), _actor(request)
        req = SetCanary.parse(await read_body(request))
        return _json(change_json(await self.ops.set_canary(agent, req, actor)))

    async def clear_canary(self, request: web.Request) -> web.Response:
        agent, actor = _agent(request), _actor(request)
        req = Reason.parse(await read_body(request))
        return _json(change_json(await self.ops.clear_canary(agent, req.reason, actor)))

    async def switch(self, request: web.Request) -> web.Response:
        agent, actor = _agent(request), _actor(request)
        req = Switch.parse(await read_body(request))
        result = await self.ops.switch(agent, req, actor)
        migration = None
        if result.migration is not None and result.selection is not None:
            migration = result.migration.to_json(result.selection)
        return _json({**change_json(result.change), "probe": result.probe, "migration": migration})

    async def set_shadow(self, request: web.Request) -> web.Response:
        agent, actor = _agent(request), _actor(request)
        req = SetShadow.parse(await read_body(request))
        return _json(change_json(await self.ops.set_shadow(agent, req, actor)))

    async def clear_shadow(self, request: web.Request) -> web.Response:
        agent, actor = _agent(request), _actor(request)
        req = Reason.parse(await read_body(request))
        return _json(change_json(await self.ops.clear_shadow(agent, req.reason, actor)))

    async def shadow_report(self, request: web.Request) -> web.Response:
        agent = _agent(request)
        query = ReportQuery.parse(request.query)
        return _json(await self.ops.shadow_report(agent, query))

    async def list_pins(self, request: web.Request) -> web.Response:
        agent = _agent(request)
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
        return _json(body)

    async def show_pin(self, request: web.Request) -> web.Response:
        agent = _agent(request)
        session = session_id(request.match_info["session"])
        await self.pins.require_agent(agent)
        return _json({"pin": (await self.pins.show(agent, session)).to_json()})

    async def migrate_pins(self, request: web.Request) -> web.Response:
        agent, actor = _agent(request), _actor(request)
        req = MigratePins.parse(await read_body(request))
        service = self.ops.service
        await self.pins.require_agent(agent)
        for release in (req.source, req.target):  # releases are never deleted: check once
            await service.get_release(agent, release)
        selection = Selection(
            agent=agent,
            target=req.target,
            source=req.source,
            session=req.session,
            percent=req.percent,
        )
        migration = await self.pins.migrate(selection, actor, req.reason)
        return _json(migration.to_json(selection))

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
