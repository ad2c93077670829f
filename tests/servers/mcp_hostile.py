"""A hand-written MCP backend that speaks just enough of the handshake era to be connected to,
then misbehaves as told: on ``tools/call`` (``mode``) or on ``tools/list`` (``list_mode``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

ARGS = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
SESSION = "backend-session-1"
MAX_BYTES = 4096


@dataclass
class Hostile:
    """``mode`` decides how tools/call is answered, ``list_mode`` how tools/list is (``ok``, or
    any mode of tools/call); everything else is well-formed."""

    mode: str = "ok"
    list_mode: str = "ok"
    pad: int = 2 * MAX_BYTES  # how big "huge" answers are
    init_version: str = "2025-11-25"
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/mcp"))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        method, ident = body.get("method"), body.get("id")
        if method == "server/discover":
            return web.json_response({"error": "unknown"}, status=400)  # a handshake-era server
        if method == "initialize":
            result = {"protocolVersion": self.init_version, "capabilities": {"tools": {}},
                      "serverInfo": {"name": "hostile", "version": "0"}}  # fmt: skip
            return web.json_response({"jsonrpc": "2.0", "id": ident, "result": result},
                                     headers={"Mcp-Session-Id": SESSION})  # fmt: skip
        if ident is None:
            return web.Response(status=202)
        if method == "tools/list":
            tool = {"name": "search", "inputSchema": ARGS}
            listed = {"jsonrpc": "2.0", "id": ident, "result": {"tools": [tool]}}
            return await self.answer(request, ident, self.list_mode, listed)
        ok = {"jsonrpc": "2.0", "id": ident,
              "result": {"content": [{"type": "text", "text": "found it"}]}}  # fmt: skip
        return await self.answer(request, ident, self.mode, ok)

    async def answer(
        self, request: web.Request, ident: Any, mode: str, ok: dict[str, Any]
    ) -> web.StreamResponse:
        if mode == "ok":
            return web.json_response(ok)
        if mode == "html":
            return web.Response(text="<html>gateway</html>", content_type="text/html")
        if mode == "not_json":
            return web.Response(text="{nope", content_type="application/json")
        if mode == "http_500":
            return web.Response(status=500, text="boom")
        if mode == "redirect":
            raise web.HTTPFound("http://169.254.169.254/latest/meta-data")
        if mode == "wrong_id":
            return web.json_response({**ok, "id": "someone-else"})
        if mode == "no_result":
            return web.json_response({"jsonrpc": "2.0", "id": ident, "result": "done"})
        if mode == "rpc_error":
            error = {"code": -32602, "message": "query too short"}
            return web.json_response({"jsonrpc": "2.0", "id": ident, "error": error})
        if mode == "session_gone":
            return web.Response(status=404)
        if mode == "huge":
            return web.Response(text=json.dumps({**ok, "pad": "x" * self.pad}),
                                content_type="application/json")  # fmt: skip
        if mode == "slow":
            await asyncio.sleep(5)
            return web.json_response(ok)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if mode == "stream_ends":  # a notification, then the stream ends without the answer
            await response.write(b'event: message\ndata: {"jsonrpc":"2.0","method":"n"}\n\n')
            return response
        if mode == "stream_huge":
            await response.write(b"data: " + b"x" * self.pad + b"\n\n")
            return response
        if mode == "dies":  # half an answer, then the connection is cut
            await response.write(b'event: message\ndata: {"jsonrpc":"2.0",')
            assert request.transport is not None
            request.transport.abort()
            return response
        raise AssertionError(f"unknown mode {mode}")


async def refuse_delete(_request: web.Request) -> web.Response:
    return web.Response(status=405)  # servers may refuse to end a session: that is fine


@asynccontextmanager
async def hostile_backend() -> AsyncIterator[Hostile]:
    backend = Hostile()
    app = web.Application()
    app.router.add_post("/mcp", backend.handle)
    app.router.add_delete("/mcp", refuse_delete)
    backend.server = TestServer(app, host="127.0.0.1")
    await backend.server.start_server()
    try:
        yield backend
    finally:
        await backend.server.close()
