"""Tier 2: MCP backends that answer off-spec, fail or die mid-call.

A hand-written backend speaks just enough MCP (the handshake era) to be connected to, then
misbehaves on ``tools/call`` as told. The sidecar's client classifies each failure, and through
the sidecar the official SDK's client sees each one as a tool result with ``isError`` -- the
session goes on, and the next call succeeds once the backend behaves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from holdfast.mcp.client import DEFAULT_MAX_BYTES, Connection, McpClient, McpFault, McpRpcError
from holdfast.net.guard import HostPolicy
from tests.servers.mcp_hostile import ARGS, MAX_BYTES, SESSION, Hostile, hostile_backend
from tests.servers.mcp_stack import TOOLSET, McpSidecar, mcp_sidecar, sdk_client

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
async def hostile() -> AsyncIterator[Hostile]:
    async with hostile_backend() as backend:
        yield backend


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
