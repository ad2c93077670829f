"""Tier 2: the sidecar's MCP surface with the official MCP SDK as client, in front of a real
MCP server built with the same SDK: both protocol eras, pinned tool sets, faults, bad input."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from mcp.shared.exceptions import MCPError

from holdfast.keyspace.budget import Budget
from holdfast.keyspace.prompt import PromptVersion
from sidecar.mcp import methods as mcp_methods
from tests.servers.conftest import KS
from tests.servers.mcp_stack import (
    TOOLSET,
    McpBackend,
    McpSidecar,
    live_tool,
    mcp_backend,
    mcp_sidecar,
    sdk_client,
)

MODES = ("auto", "legacy")  # auto: the SDK probes server/discover and speaks 2026-07-28


@pytest.fixture
async def backend() -> AsyncIterator[McpBackend]:
    async with mcp_backend() as b:
        yield b


@pytest.fixture
async def sut(backend: McpBackend) -> AsyncIterator[McpSidecar]:
    async with mcp_sidecar("http://127.0.0.1:9") as sidecar:
        live = await live_tool(backend.url, "search")
        old = copy.deepcopy(live)  # v1: before the backend grew `lang`; extra fields refused
        del old["inputSchema"]["properties"]["lang"]
        old["inputSchema"]["additionalProperties"] = False
        sidecar.contract("search", "1.0.0", old, backend.url, timeout_s=2.0)
        sidecar.contract("search", "2.0.0", live, backend.url, timeout_s=2.0)
        prompt = PromptVersion(name="triage", version="1", text="Triage {{ticket}} politely.",
                               status="active", description="the triage prompt")  # fmt: skip
        sidecar.put(KS.prompt("triage", "1"), prompt.encode())
        sidecar.release("r1", {"search": "1.0.0"}, {TOOLSET: [backend.url]}, {"triage": "1"})
        sidecar.release("r2", {"search": "2.0.0"}, {TOOLSET: [backend.url]})
        sidecar.stable("r1")
        yield sidecar


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def props(tools: Any) -> set[str]:
    (tool,) = tools.tools
    return set(tool.input_schema["properties"])


async def status(sut: McpSidecar) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(f"{sut.url}/status") as resp:
        body: dict[str, Any] = await resp.json()
        return body


@pytest.mark.parametrize("mode", MODES)
async def test_list_and_call_through_the_sidecar(
    sut: McpSidecar, backend: McpBackend, mode: str
) -> None:
    async with sdk_client(sut.mcp_url(), session=f"s-{mode}", mode=mode) as client:
        tools = await client.list_tools()
        assert [t.name for t in tools.tools] == ["search"]
        assert props(tools) == {"query", "limit"}  # the pinned v1, not the backend's live v2
        result = await client.call_tool("search", {"query": "pins", "limit": 2})
        assert result.is_error is False
        assert result.structured_content == {"hits": ["pins:en:0", "pins:en:1"]}
        refused = await client.call_tool("search", {"query": "pins", "lang": "fr"})
        assert refused.is_error is True and "search@1.0.0" in refused.content[0].text  # type: ignore[union-attr]
        prompts = await client.list_prompts()
        assert {p.name for p in prompts.prompts} == {"triage", "greet"}
        got = await client.get_prompt("triage", {"ticket": "T-1"})
        assert got.messages[0].content.text == "Triage T-1 politely."  # type: ignore[union-attr]
        resources = await client.list_resources()
        assert [str(r.uri) for r in resources.resources] == ["docs://readme"]
    assert backend.calls == [{"query": "pins", "limit": 2, "lang": "en"}]  # the refusal never left
    era = "modern" if mode == "auto" else "handshake"
    labels = {"agent": "support", "toolset": TOOLSET, "era": era, "method": "tools/call"}
    sample = sut.metrics.registry.get_sample_value(
        "holdfast_mcp_requests_total", labels | {"result": "ok"}
    )
    assert sample == 2
    body = await status(sut)
    calls = {(s["release"], s["tool"]): s for s in body["contracts"]["stats"]}
    assert calls[("r1", "search")]["calls"] == 2
    assert body["contracts"]["mcp"]["drift"][0]["contract"] == "search@1.0.0"


async def test_schema_change_reaches_new_sessions_only(sut: McpSidecar) -> None:
    async with sdk_client(sut.mcp_url(), session="old", mode="legacy") as old:
        assert props(await old.list_tools()) == {"query", "limit"}
        sut.stable("r2")  # the rollout: new sessions get v2
        async with sdk_client(sut.mcp_url(), session="new") as new:
            assert props(await new.list_tools()) == {"query", "limit", "lang"}
            result = await new.call_tool("search", {"query": "q", "limit": 1, "lang": "fr"})
            assert result.structured_content == {"hits": ["q:fr:0"]}
        assert props(await old.list_tools()) == {"query", "limit"}  # pinned: keeps v1
        assert (await old.call_tool("search", {"query": "q", "lang": "fr"})).is_error is True


async def test_migration_sends_list_changed(sut: McpSidecar) -> None:
    changed = asyncio.Event()

    async def on_message(message: Any) -> None:
        if getattr(getattr(message, "root", message), "method", "") == (
            "notifications/tools/list_changed"
        ):
            changed.set()

    async with sdk_client(sut.mcp_url(), session="moving", mode="legacy") as client:
        client.session._message_handler = on_message
        assert props(await client.list_tools()) == {"query", "limit"}
        async with aiohttp.ClientSession() as http:
            # the GET stream, as the SDK's own would be: the notification travels on it
            sid = next(iter(s.id for s in sut_sessions(sut)))
            async with http.get(
                sut.mcp_url(),
                headers={"Mcp-Session-Id": sid, "Accept": "text/event-stream",
                         "MCP-Protocol-Version": "2025-11-25", "X-Holdfast-Session": "moving"},
            ) as stream:  # fmt: skip
                await asyncio.sleep(0.05)
                sut.migrate("moving", "r2")
                line = b""
                async with asyncio.timeout(5):
                    while b"list_changed" not in line:
                        line = await stream.content.readline()
        assert props(await client.list_tools()) == {"query", "limit", "lang"}


def sut_sessions(sut: McpSidecar) -> list[Any]:
    from sidecar.mcp import McpServer

    for route in sut.server.app.router.routes():
        owner = getattr(route.handler, "__self__", None)
        if isinstance(owner, McpServer):
            return owner.sessions.sessions()
    raise LookupError("no MCP server")


@pytest.mark.parametrize("mode", MODES)
async def test_backend_failure_degrades_to_is_error(
    sut: McpSidecar, backend: McpBackend, mode: str
) -> None:
    async with sdk_client(sut.mcp_url(), session=f"f-{mode}", mode=mode) as client:
        backend.fail = True
        own = await client.call_tool("search", {"query": "x"})
        assert own.is_error is True and "rebuilding" in own.content[0].text  # type: ignore[union-attr]
        await backend.stop()
        down = await client.call_tool("search", {"query": "x"})
        assert down.is_error is True
        assert "could not be called" in down.content[0].text  # type: ignore[union-attr]
        assert [t.name for t in (await client.list_tools()).tools] == ["search"]  # no flapping
        with pytest.raises(MCPError):
            await client.call_tool("nope", {})  # a tool the release does not pin: a protocol error


async def test_bad_input_gets_json_rpc_errors(sut: McpSidecar) -> None:
    url = sut.mcp_url()
    modern = {"MCP-Protocol-Version": "2026-07-28", "Mcp-Method": "tools/list",
              "Accept": "application/json, text/event-stream"}  # fmt: skip
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {}}  # fmt: skip
    async with aiohttp.ClientSession() as http:

        async def post(data: bytes, headers: dict[str, str]) -> tuple[int, Any]:
            async with http.post(url, data=data, headers=headers) as resp:
                return resp.status, (await resp.json() if resp.content_length else None)

        assert (await post(b"{nope", {}))[1]["error"]["code"] == -32700
        assert (await post(b"[]", {}))[1]["error"]["code"] == -32600
        status, body = await post(b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}', {})
        assert status == 400 and "Mcp-Session-Id" in body["error"]["message"]
        status, body = await post(
            b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}',
            {"Mcp-Session-Id": "mcp.docs." + "0" * 32},
        )
        assert status == 404
        request = dumps(
            {"jsonrpc": "2.0", "id": 2, "method": "nope/nope", "params": {"_meta": meta}}
        )
        status, body = await post(request, modern | {"Mcp-Method": "nope/nope"})
        assert status == 404 and body["error"]["code"] == -32601
        status, body = await post(request, modern)
        assert status == 400 and body["error"]["code"] == -32020  # header says tools/list
        huge = dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": "a" * (5 << 20)}}
        )
        assert (await post(huge, {}))[0] == 413
        init = dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-03-26", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}})  # fmt: skip
        async with http.post(url, data=init, headers={"X-Holdfast-Session": "alice"}) as resp:
            sid = resp.headers["Mcp-Session-Id"]
            assert (await resp.json())["result"]["protocolVersion"] == "2025-03-26"
        ping, listing = {"jsonrpc": "2.0", "id": 1, "method": "ping"}, {"jsonrpc": "2.0", "id": 2}
        batch = dumps([ping, listing | {"method": "tools/list"}, {"bad": 1}])
        status, body = await post(batch, {"Mcp-Session-Id": sid, "X-Holdfast-Session": "alice"})
        assert status == 200 and [m.get("id") for m in body] == [1, 2, None]
        assert body[2]["error"]["code"] == -32600
        status, body = await post(
            dumps(ping), {"Mcp-Session-Id": sid, "X-Holdfast-Session": "mallory"}
        )
        assert status == 403 and body["error"]["code"] == -32001


async def test_a_spent_tool_call_budget_is_an_is_error_result(
    sut: McpSidecar, backend: McpBackend
) -> None:
    budget = Budget(scope="session:counted", tokens=0, tool_calls=2, window="1h")
    sut.put(KS.budget(budget.scope), budget.encode())
    async with sdk_client(sut.mcp_url(), session="counted", mode="legacy") as client:
        refused = await client.call_tool("search", {"query": "q", "lang": "fr"})
        assert refused.is_error is True  # the contract refused it: no call spent
        for _ in range(2):
            assert (await client.call_tool("search", {"query": "q"})).is_error is False
        spent = await client.call_tool("search", {"query": "q"})
        assert spent.is_error is True and spent.meta is not None
        assert spent.meta["holdfast/outcome"] == "budget_exhausted"
        text = spent.content[0].text  # type: ignore[union-attr]
        assert "tool-call budget session:counted is exhausted: limit 2 tool calls" in text
        assert [t.name for t in (await client.list_tools()).tools] == ["search"]  # session goes on
    async with sdk_client(sut.mcp_url(), session="other", mode="legacy") as client:
        assert (await client.call_tool("search", {"query": "q"})).is_error is False
    assert len(backend.calls) == 3
    refusals = sut.metrics.registry.get_sample_value(
        "holdfast_mcp_tool_calls_refused_budget_total", {"agent": "support", "toolset": TOOLSET}
    )
    assert refusals == 1
    (counted,) = (await status(sut))["contracts"]["mcp"]["tool_call_budgets"]
    assert (counted["scope"], counted["used"], counted["refused"]) == ("session:counted", 2, 1)


async def test_a_stale_listing_is_listed_afresh_before_it_counts_as_drift(
    sut: McpSidecar, backend: McpBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mcp_methods, "DRIFT_CONFIRM_AGE_S", 0.0)  # any cached listing is old
    async with sdk_client(sut.mcp_url(), session="upgraded", mode="legacy") as client:
        await client.list_tools()  # the backend's listing is cached now (v1 drifts from it)
        backend.reshape("optional")  # the server is upgraded...
        sut.contract("search", "3.0.0", await live_tool(backend.url, "search"), backend.url,
                     timeout_s=2.0)  # fmt: skip
        sut.release("r3", {"search": "3.0.0"}, {TOOLSET: [backend.url]})
        sut.migrate("upgraded", "r3")  # ...and the session moved to its contract
        assert props(await client.list_tools()) == {"query", "limit", "lang", "region"}
    drifted = [d["contract"] for d in (await status(sut))["contracts"]["mcp"]["drift"]]
    assert drifted == ["search@1.0.0"]  # the cached listing said 3.0.0 drifted: it had not


async def test_batches_follow_the_session_revision_and_notifications_get_no_answer(
    sut: McpSidecar,
) -> None:
    url = sut.mcp_url()
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    note = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 9}}

    async def opened(http: aiohttp.ClientSession, version: str) -> dict[str, str]:
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": version, "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}}  # fmt: skip
        async with http.post(url, json=init, headers={"X-Holdfast-Session": "b"}) as resp:
            assert (await resp.json())["result"]["protocolVersion"] == version
            return {"Mcp-Session-Id": resp.headers["Mcp-Session-Id"], "X-Holdfast-Session": "b",
                    "MCP-Protocol-Version": version}  # fmt: skip

    async with aiohttp.ClientSession() as http:

        async def post(body: Any, headers: dict[str, str]) -> tuple[int, Any]:
            async with http.post(url, data=dumps(body), headers=headers) as resp:
                return resp.status, (await resp.json() if resp.content_length else None)

        old, new = await opened(http, "2025-03-26"), await opened(http, "2025-11-25")
        assert await post([note, note], old) == (202, None)  # notifications only: no body
        assert await post(note, new) == (202, None)
        status, body = await post([ping, note, {**ping, "id": "two"}], old)
        assert status == 200 and [m["id"] for m in body] == [1, "two"]  # none for the note
        status, body = await post([ping], new)  # no batches after 2025-03-26
        assert status == 400 and body["error"]["code"] == -32600
        assert "2025-11-25" in body["error"]["message"]
        init = {"jsonrpc": "2.0", "id": 5, "method": "initialize", "params": {}}
        status, body = await post([ping, init], old)
        assert (status, body["error"]["code"], body["id"]) == (400, -32600, 5)
        status, body = await post({"jsonrpc": "2.0", "id": None, "method": "ping"}, new)
        assert status == 200 and body["error"]["code"] == -32600 and body["id"] is None
        status, body = await post({"jsonrpc": "2.0", "id": 3, "method": "tools/list",
                                   "params": [1]}, new)  # fmt: skip
        assert body["error"]["code"] == -32602 and body["id"] == 3
