"""Tier 2: MCP backends that answer off-spec, fail or die mid-call.

A hand-written backend speaks just enough MCP (the handshake era) to be connected to, then
misbehaves on ``tools/call`` as told. The sidecar's client classifies each failure, and through
the sidecar the official SDK's client sees each one as a tool result with ``isError`` -- the
session goes on, and the next call succeeds once the backend behaves.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from holdfast.mcp.client import DEFAULT_MAX_BYTES, Connection, McpClient, McpFault, McpRpcError
from holdfast.net.guard import HostPolicy
from tests.servers.mcp_stack import TOOLSET, McpSidecar, mcp_sidecar, sdk_client

ARGS = {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}
SESSION = "backend-session-1"
MAX_BYTES = 4096


@dataclass
class Hostile:
    """``mode`` decides how tools/call is answered; everything else is well-formed."""

    mode: str = "ok"
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
            return web.json_response({"jsonrpc": "2.0", "id": ident, "result": {"tools": [tool]}})
        return await self.call(request, ident)

    async def call(self, request: web.Request, ident: Any) -> web.StreamResponse:
        ok = {"jsonrpc": "2.0", "id": ident,
              "result": {"content": [{"type": "text", "text": "found it"}]}}  # fmt: skip
        mode = self.mode
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


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    backend = Hostile()
    app = web.Application()
    app.router.add_post("/mcp", backend.handle)
    app.router.add_delete("/mcp", refuse_delete)
    backend.server = TestServer(app, host="127.0.0.1")
    await backend.server.start_server()
    yield backend
    await backend.server.close()


FAULTS = {
    "html": ("off_spec", "text/html"),
    "not_json": ("off_spec", "not JSON"),
    "http_500": ("backend_error", "HTTP 500"),
    "redirect": ("redirect_refused", "redirect"),
    "wrong_id": ("off_spec", "another request's id"),
    "no_result": ("off_spec", "not an object"),
    "session_gone": ("session_lost", "no longer knows"),
    "huge": ("too_large", "bytes"),
    "slow": ("timeout", "took over"),
    "stream_ends": ("off_spec", "without answering"),
    "stream_huge": ("too_large", "stream"),
    "dies": ("unreachable", "broke the connection"),
}


async def test_the_client_classifies_every_way_a_backend_fails(hostile: Hostile) -> None:
    client = McpClient(max_bytes=MAX_BYTES)
    try:
        conn = await client.connect(hostile.url, timeout_s=2)
        assert (conn.era, conn.version, conn.session_id) == ("handshake", "2025-11-25", SESSION)
        params = {"name": "search", "arguments": {"query": "q"}}
        for mode, (outcome, words) in FAULTS.items():
            hostile.mode = mode
            with pytest.raises(McpFault) as fault:
                await client.call(conn, "tools/call", params, timeout_s=0.3)
            assert fault.value.outcome == outcome, mode
            assert words in fault.value.message, (mode, fault.value.message)
            if outcome == "too_large":
                assert f"over {MAX_BYTES} bytes" in fault.value.message
        hostile.mode = "rpc_error"
        with pytest.raises(McpRpcError) as rpc:
            await client.call(conn, "tools/call", params, timeout_s=1)
        assert (rpc.value.code, rpc.value.message) == (-32602, "query too short")
        hostile.mode = "ok"
        answer = await client.call(conn, "tools/call", params, timeout_s=1)
        assert answer["content"][0]["text"] == "found it"

        hostile.init_version = "1999-01-01"  # a handshake answered with no revision we speak
        with pytest.raises(McpFault) as fault:
            await client.connect(hostile.url, timeout_s=2)
        assert fault.value.outcome == "off_spec" and "1999-01-01" in fault.value.message
        with pytest.raises(McpFault) as fault:
            await client.connect("http://127.0.0.1:9/mcp", timeout_s=2)  # nothing listens
        assert fault.value.outcome == "unreachable"
    finally:
        await client.close()
    strict = McpClient(policy=HostPolicy(("api.example.com",)))
    try:
        with pytest.raises(McpFault) as fault:
            await strict.call(Connection(hostile.url, "handshake", "2025-11-25"), "tools/list", {},
                              timeout_s=1)  # fmt: skip
        assert fault.value.outcome == "host_not_allowed"
        with pytest.raises(McpFault) as fault:
            await strict.connect("http://169.254.169.254/mcp", timeout_s=1)
        assert fault.value.outcome == "host_not_allowed"
    finally:
        await strict.close()


@pytest.fixture
async def sut(hostile: Hostile) -> AsyncIterator[McpSidecar]:
    async with mcp_sidecar("http://127.0.0.1:9") as sidecar:
        sidecar.contract("search", "1.0.0", {"inputSchema": ARGS}, hostile.url, timeout_s=1)
        sidecar.release("r1", {"search": "1.0.0"}, {TOOLSET: [hostile.url]})
        sidecar.stable("r1")
        yield sidecar


async def test_every_backend_failure_reaches_the_agent_as_is_error(
    sut: McpSidecar, hostile: Hostile
) -> None:
    # session_gone: the sidecar renews its backend session once and is refused again. Each
    # fault is followed by a good call: the session goes on, and the consecutive transport
    # failures never reach the breaker's threshold (that is test_mcp_proxy's).
    through = FAULTS | {"rpc_error": ("backend_rejected", "query too short")}
    hostile.pad = 2 * DEFAULT_MAX_BYTES  # over what the sidecar reads of a backend's answer
    async with sdk_client(sut.mcp_url(), session="faults", mode="legacy") as client:
        for mode, (outcome, words) in through.items():
            hostile.mode = mode
            result = await client.call_tool("search", {"query": "q"})
            assert result.is_error is True, mode
            assert result.meta is not None and result.meta["holdfast/outcome"] == outcome, mode
            text = result.content[0].text  # type: ignore[union-attr]
            assert words in text and "search" in text, (mode, text)
            hostile.mode = "ok"
            result = await client.call_tool("search", {"query": "q"})
            assert result.is_error is False, mode
            assert result.content[0].text == "found it"  # type: ignore[union-attr]
    stats = {(s["release"], s["tool"]): s for s in sut.metrics.contracts.stats()}
    assert stats[("r1", "search")]["calls"] == 2 * len(through)
