"""HTTP handlers of releases, routes and the audit trail: ``/v1/agents/{agent}/releases``,
``/v1/agents/{agent}/route`` (stable, rollback, aliases) and ``/v1/history``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from configsvc.http import (
    HistoryQuery,
    actor_of,
    admit_upstream,
    agent_of,
    read_body,
    release_of,
    reply,
)
from configsvc.releases.create import PromptResolver, create_release
from configsvc.releases.ops import ConfigService, Versioned
from configsvc.releases.payloads import NewRelease, Rollback, SetAliases, SetStable
from holdfast.keyspace import Release, Route


def release_json(v: Versioned[Release]) -> dict[str, Any]:
    return {**v.record.public(), "mod_revision": v.mod_revision}


def route_json(v: Versioned[Route]) -> dict[str, Any]:
    return {"route": v.record.public(), "mod_revision": v.mod_revision}


class ReleasesApi:
    def __init__(self, service: ConfigService, prompts: PromptResolver) -> None:
        self.service = service
        self.prompts = prompts

    async def list_releases(self, request: web.Request) -> web.Response:
        agent = agent_of(request)
        revision, releases = await self.service.list_releases(agent)
        return reply(
            {"agent": agent, "revision": revision, "releases": [release_json(r) for r in releases]}
        )

    async def create_release(self, request: web.Request) -> web.Response:
        agent, actor = agent_of(request), actor_of(request)
        req = NewRelease.parse(await read_body(request))
        admit_upstream(request, req.base_url, param="base_url")
        for urls in req.mcp.values():
            for url in urls:
                admit_upstream(request, url, param="mcp")
        created = await create_release(self.service, agent, req, actor, self.prompts)
        return reply({"release": release_json(created)}, status=201)

    async def show_release(self, request: web.Request) -> web.Response:
        found = await self.service.get_release(agent_of(request), release_of(request))
        return reply({"release": release_json(found)})

    async def show_route(self, request: web.Request) -> web.Response:
        return reply(route_json(await self.service.get_route(agent_of(request))))

    async def set_stable(self, request: web.Request) -> web.Response:
        agent, actor = agent_of(request), actor_of(request)
        req = SetStable.parse(await read_body(request))
        return reply((await self.service.set_stable(agent, req, actor)).to_json())

    async def rollback(self, request: web.Request) -> web.Response:
        agent, actor = agent_of(request), actor_of(request)
        req = Rollback.parse(await read_body(request))
        return reply((await self.service.rollback(agent, req, actor)).to_json())

    async def set_aliases(self, request: web.Request) -> web.Response:
        agent, actor = agent_of(request), actor_of(request)
        req = SetAliases.parse(await read_body(request))
        return reply((await self.service.set_aliases(agent, req, actor)).to_json())

    async def history(self, request: web.Request) -> web.Response:
        query = HistoryQuery.parse(request.query)
        revision, items = await self.service.history(query)
        return reply({"revision": revision, "entries": [i.to_json() for i in items]})

    def routes(self) -> list[web.RouteDef]:
        agent = "/v1/agents/{agent}"
        return [
            web.get(f"{agent}/releases", self.list_releases),
            web.post(f"{agent}/releases", self.create_release),
            web.get(f"{agent}/releases/{{release}}", self.show_release),
            web.get(f"{agent}/route", self.show_route),
            web.put(f"{agent}/route/stable", self.set_stable),
            web.post(f"{agent}/route/rollback", self.rollback),
            web.put(f"{agent}/route/aliases", self.set_aliases),
            web.get("/v1/history", self.history),
        ]
