"""HTTP handlers of tool contracts, under ``/v1/contracts``."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from configsvc.contracts.mcp_import import ImportMcp, fetch_tools, import_tools
from configsvc.contracts.ops import ContractOps
from configsvc.contracts.payloads import DiffQuery, RegisterContract, version
from configsvc.http import (
    UPSTREAM_KEY,
    actor_of,
    admit_upstream,
    name,
    read_body,
    read_document,
    reply,
)
from holdfast.contracts.schema import MAX_SCHEMA_BYTES

# Two schemas of up to MAX_SCHEMA_BYTES each (canonical JSON) as a client sends them: ASCII-only
# escapes and ", "/": " separators can triple that; plus the other fields.
REGISTER_BODY_BYTES: Final = 6 * MAX_SCHEMA_BYTES + 64 * 1024
REGISTER_TOO_LARGE: Final = (
    f"request body is larger than {REGISTER_BODY_BYTES} bytes: each schema may be at most "
    f"{MAX_SCHEMA_BYTES} bytes as canonical JSON"
)


def _tool(request: web.Request) -> str:
    return name(request.match_info["tool"], what="tool", param="tool")


class ContractsApi:
    def __init__(self, ops: ContractOps) -> None:
        self.ops = ops

    async def register(self, request: web.Request) -> web.Response:
        tool, actor = _tool(request), actor_of(request)
        raw = await read_document(request, limit=REGISTER_BODY_BYTES, too_large=REGISTER_TOO_LARGE)
        req = RegisterContract.parse(raw)
        if req.backend:
            admit_upstream(request, req.backend, param="backend")
        done = await self.ops.register(tool, req, actor)
        body = {
            "contract": {**done.contract.public(), "mod_revision": done.mod_revision},
            "created": done.created,
            **done.diff.to_json(),
        }
        return reply(body, status=201 if done.created else 200)

    async def list_tools(self, request: web.Request) -> web.Response:
        revision, tools = await self.ops.list_tools()
        return reply({"revision": revision, "tools": tools})

    async def list_versions(self, request: web.Request) -> web.Response:
        tool = _tool(request)
        revision, versions = await self.ops.list_versions(tool)
        return reply({"tool": tool, "revision": revision, "versions": versions})

    async def show(self, request: web.Request) -> web.Response:
        tool = _tool(request)
        wanted = version(request.match_info["version"], param="version")
        contract, mod_revision = await self.ops.get(tool, wanted)
        return reply({"contract": {**contract.public(), "mod_revision": mod_revision}})

    async def diff(self, request: web.Request) -> web.Response:
        tool = _tool(request)
        query = DiffQuery.parse(request.query)
        verdict = await self.ops.diff(tool, query.old, query.new)
        return reply({"tool": tool, "from": query.old, "to": query.new, **verdict.to_json()})

    async def import_mcp(self, request: web.Request) -> web.Response:
        actor = actor_of(request)
        req = ImportMcp.parse(await read_body(request))
        admit_upstream(request, req.url, param="url")
        server, tools = await fetch_tools(req.url, request.app[UPSTREAM_KEY])
        report = await import_tools(self.ops, req, tools, actor)
        return reply({"url": req.url, "server": server, "tools": report})

    def routes(self) -> list[web.RouteDef]:
        base = "/v1/contracts"
        return [
            web.post("/v1/mcp/import", self.import_mcp),
            web.get(base, self.list_tools),
            web.post(f"{base}/{{tool}}", self.register),
            web.get(f"{base}/{{tool}}", self.list_versions),
            web.get(f"{base}/{{tool}}/diff", self.diff),
            web.get(f"{base}/{{tool}}/{{version}}", self.show),
        ]
