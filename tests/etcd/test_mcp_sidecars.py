"""Tier 3: MCP sessions across real sidecar processes, configsvc and a real etcd, in front of a
real MCP server built with the official SDK.

One agent conversation (``X-Holdfast-Session: conv-1``) opens an MCP session on sidecar A and
goes on on sidecar B, which never saw it: B revives it from its pin and serves it its pinned
release's tools, and refuses the session id under another conversation. The operator upgrades
the MCP server and rolls a release with its new contract out: new sessions get the new tool
set, conv-1 keeps its own; the server's changed live tools/list under conv-1's pin is drift --
in B's /status and /metrics and, once, in the audit trail. ``holdfastctl pins migrate`` moves
conv-1 and its open notification stream on A gets ``tools/list_changed``. Then etcd goes away
and pinned sessions keep working from the sidecars' last-known configuration.

The handshake era is spoken here with plain JSON-RPC over aiohttp (the tests of tier 2 drive the
same surface with the SDK's client): a session that moves between sidecars needs its
``Mcp-Session-Id`` in hand.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import AGENT, KEY_VAR, Stack, get_json, stable_is, start_stack, wait_for
from tests.servers.mcp_stack import mcp_backend

VERSION = "2025-11-25"
SIDECAR_ARGS = ("--health-interval", "0.5")
V1 = {"query", "limit", "lang"}
V11 = V1 | {"region"}


@dataclass
class Conversation:
    """One MCP session of the handshake era, as an agent's client holds it."""

    base: str  # the sidecar it talks to
    owner: str  # its X-Holdfast-Session
    session_id: str = ""
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def headers(self, owner: str | None = None) -> dict[str, str]:
        found = {"Accept": "application/json, text/event-stream",
                 "X-Holdfast-Session": owner or self.owner}  # fmt: skip
        if self.session_id:
            found |= {"Mcp-Session-Id": self.session_id, "MCP-Protocol-Version": VERSION}
        return found

    async def post(
        self, method: str, params: dict[str, Any], *, base: str = "", owner: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        body = {"jsonrpc": "2.0", "id": next(self.ids), "method": method, "params": params}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base or self.base}/mcp/docs", json=body,
                                 headers=self.headers(owner)) as resp:  # fmt: skip
                if method == "initialize":
                    self.session_id = resp.headers["Mcp-Session-Id"]
                answer: dict[str, Any] = await resp.json()
                return resp.status, answer

    async def open(self) -> None:
        status, answer = await self.post("initialize", {
            "protocolVersion": VERSION, "capabilities": {},
            "clientInfo": {"name": "e2e", "version": "1"}})  # fmt: skip
        assert status == 200 and answer["result"]["protocolVersion"] == VERSION, answer
        async with aiohttp.ClientSession() as http:
            note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            async with http.post(f"{self.base}/mcp/docs", json=note,
                                 headers=self.headers()) as resp:  # fmt: skip
                assert resp.status == 202

    async def result(self, method: str, params: dict[str, Any], base: str = "") -> Any:
        status, answer = await self.post(method, params, base=base)
        assert status == 200 and "result" in answer, answer
        return answer["result"]

    async def props(self, base: str = "") -> set[str]:
        (tool,) = (await self.result("tools/list", {}, base))["tools"]
        assert tool["name"] == "search"
        return set(tool["inputSchema"]["properties"])

    async def call(self, arguments: dict[str, Any], base: str = "") -> dict[str, Any]:
        found: dict[str, Any] = await self.result(
            "tools/call", {"name": "search", "arguments": arguments}, base
        )
        return found


async def ctl(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(stack.ctl, *args)


async def drift_entries(stack: Stack) -> list[dict[str, Any]]:
    out = await ctl(stack, "--json", "history", "--limit", "200")
    return [e for e in json.loads(out.stdout)["entries"] if e["action"] == "mcp.drift"]


async def eventually(check: Any, timeout: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await check()
        if found or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.1)


async def test_mcp_sessions_across_sidecars_rollout_drift_migration_and_outage(
    tmp_path: Path, fresh_etcd: EtcdNode, etcd_env: str
) -> None:
    stack = start_stack(tmp_path, etcd_env, [fresh_etcd.client_url])
    try:
        async with mcp_backend() as backend:
            await scenario(stack, fresh_etcd, backend.url, backend.reshape)
    finally:
        stack.stop()


async def scenario(stack: Stack, etcd: EtcdNode, url: str, reshape: Any) -> None:
    model = ["--model", "model-one", "--base-url", f"{stack.fake.url}/v1", "--api-key-env",
             KEY_VAR, "--mcp", f"docs={url}"]  # fmt: skip
    await ctl(stack, "contract", "import-mcp", url)
    await ctl(stack, "release", "create", AGENT, "m1", *model, "--contract", "search=1.0.0")
    await ctl(stack, "route", "set-stable", AGENT, "m1")
    a = stack.start_sidecar([etcd.client_url], name="a", args=SIDECAR_ARGS)
    await wait_for(f"{a.url}/status", stable_is("m1"))

    conv1 = Conversation(a.url, "conv-1")
    await conv1.open()
    assert await conv1.props() == V1
    assert (await conv1.call({"query": "pins"}))["structuredContent"] == {
        "hits": ["pins:en:0", "pins:en:1", "pins:en:2"]}  # fmt: skip

    # The operator upgrades the MCP server (an optional argument more) and rolls it out.
    reshape("optional")
    imported = await ctl(stack, "contract", "import-mcp", url)
    assert "search@1.1.0: registered (compatible)" in imported.stdout
    await ctl(stack, "release", "create", AGENT, "m2", *model, "--contract", "search=1.1.0")
    await ctl(stack, "route", "set-stable", AGENT, "m2")
    b = stack.start_sidecar([etcd.client_url], name="b", args=SIDECAR_ARGS)
    await wait_for(f"{b.url}/status", stable_is("m2"))

    # conv-1 goes on on B, which never saw it: revived from its pin, still on m1's contract
    # although the server's live tool has changed under it.
    assert await conv1.props(b.url) == V1
    assert (await conv1.call({"query": "q", "limit": 1}, b.url))["isError"] is False
    status, refused = await conv1.post("tools/list", {}, base=b.url, owner="mallory")
    assert status == 403 and refused["error"]["code"] == -32001
    status, refused = await conv1.post("tools/list", {}, base=a.url, owner="mallory")
    assert status == 403  # the same answer on the sidecar that opened it
    conv2 = Conversation(b.url, "conv-2")
    await conv2.open()
    assert await conv2.props() == V11  # a new session: the new release's tool set
    assert (await conv2.call({"query": "q", "limit": 1, "region": "us"}))["structuredContent"] == {
        "hits": ["q:en:us:0"]}  # fmt: skip

    # The drift: B's /status and /metrics, and once in the audit trail.
    _, body = await get_json(f"{b.url}/status")
    mcp = body["contracts"]["mcp"]
    assert mcp["revived"] == 1 and mcp["refused_not_owner"] == 1
    (drift,) = mcp["drift"]
    assert (drift["contract"], drift["release"], drift["detail"], drift["backend"]) == (
        "search@1.0.0", "m1", "inputSchema changed", url)  # fmt: skip
    async with aiohttp.ClientSession() as http, http.get(f"{b.url}/metrics") as resp:
        metrics = await resp.text()
    assert ('holdfast_mcp_backend_drift_total{agent="support",tool="search",toolset="docs",'
            'version="1.0.0"} 1.0') in metrics  # fmt: skip
    (entry,) = await eventually(lambda: drift_entries(stack))
    assert entry["target"] == f"drift/{drift['id']}" and entry["agent"] == AGENT
    assert entry["actor"].startswith("sidecar:") and "inputSchema changed" in entry["reason"]

    # The operator migrates conv-1: its open stream on A is told, and it lists m2's tools.
    async with aiohttp.ClientSession() as http:
        headers = conv1.headers() | {"Accept": "text/event-stream"}
        async with http.get(f"{a.url}/mcp/docs", headers=headers) as stream:
            assert stream.status == 200
            await wait_for(f"{a.url}/status", lambda s: s["contracts"]["mcp"]["streams"] == 1)
            await ctl(stack, "pins", "migrate", AGENT, "--from", "m1", "--to", "m2",
                      "--session", "conv-1", "--reason", "new tools")  # fmt: skip
            async with asyncio.timeout(10):
                line = b""
                while b"notifications/tools/list_changed" not in line:
                    line = await stream.content.readline()
    assert await conv1.props() == V11
    # B kept reporting its drift: recorded once. A's listing of the server, cached before the
    # upgrade, showed m2's contract as drifted when conv-1 listed again after its migration:
    # A listed the server afresh before believing it, and found no drift.
    assert len(await drift_entries(stack)) == 1

    # etcd goes away: pinned sessions keep working on both sidecars from last-known config.
    etcd.stop()
    assert await conv1.props() == V11 and await conv1.props(b.url) == V11
    assert await conv2.props() == V11
    assert (await conv2.call({"query": "q", "limit": 1, "region": "eu"}, a.url))["isError"] is False
    _, body = await get_json(f"{a.url}/status")
    assert body["route"]["stable"] == "m2"
    etcd.start()  # back, so that the processes stop without waiting out their etcd timeouts
