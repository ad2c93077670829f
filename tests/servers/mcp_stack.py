"""An MCP backend built with the official SDK (served by uvicorn on loopback, in-process), and
a sidecar app fed by hand whose releases name it as an MCP tool set."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx2
import uvicorn
from aiohttp.test_utils import TestServer
from mcp.client.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import BaseModel

from holdfast.keyspace import Pin, Release, Route
from holdfast.keyspace.contract import Contract
from holdfast.mcp.client import McpClient, list_all
from holdfast.store import Change, KeyValue
from holdfast.store.memory import MemoryStore
from sidecar.budgets import ToolCallBudget
from sidecar.config.kinds import CONFIG_KINDS
from sidecar.config.state import ConfigState
from sidecar.http.app import Parts, build_http_app
from sidecar.ops.metrics import SidecarMetrics
from sidecar.pins.pinning import Pinning
from sidecar.pins.table import PinTable
from sidecar.pins.writer import PinWriter
from sidecar.upstream.client import Upstream
from tests.servers.conftest import AGENT, KEY_VAR, KS, PROVIDER_KEY, StaticControl, settings

TOOLSET = "docs"


class Hits(BaseModel):
    hits: list[str]


@dataclass
class McpBackend:
    """The SDK's MCPServer with a ``search`` tool; ``fail`` makes the tool raise."""

    port: int = 0
    calls: list[dict[str, Any]] = field(default_factory=list)
    fail: bool = False
    server: uvicorn.Server | None = None
    task: asyncio.Task[None] | None = None
    app: MCPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def build(self) -> MCPServer:
        app = MCPServer("docs-backend")

        @app.tool(description="Search the documentation.")
        def search(query: str, limit: int = 3, lang: str = "en") -> Hits:
            self.calls.append({"query": query, "limit": limit, "lang": lang})
            if self.fail:
                raise ToolError("the index is rebuilding")
            return Hits(hits=[f"{query}:{lang}:{i}" for i in range(limit)])

        @app.prompt(description="A backend prompt.")
        def greet(name: str) -> str:
            return f"Hello {name}"

        @app.resource("docs://readme")
        def readme() -> str:
            return "the readme"

        self.app = app
        return app

    def reshape(self, change: str) -> None:
        """The operator upgrades the server's ``search``: ``optional`` adds an optional
        ``region`` (a compatible change), ``required`` a required one (breaking), ``gone``
        removes the tool. Its live tools/list changes at once."""
        assert self.app is not None
        self.app.remove_tool("search")
        if change == "gone":
            return

        def search(query: str, limit: int = 3, lang: str = "en", region: str = "eu") -> Hits:
            self.calls.append({"query": query, "limit": limit, "lang": lang, "region": region})
            return Hits(hits=[f"{query}:{lang}:{region}:{i}" for i in range(limit)])

        def search_required(query: str, region: str, limit: int = 3, lang: str = "en") -> Hits:
            return search(query, limit, lang, region)

        fn = search if change == "optional" else search_required
        self.app.add_tool(fn, name="search", description="Search the documentation.")

    async def start(self, *, stateless: bool = False) -> None:
        asgi = self.build().streamable_http_app(
            stateless_http=stateless,
            json_response=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        with socket.socket() as s:
            s.bind(("127.0.0.1", self.port))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(asgi, host="127.0.0.1", port=self.port, log_level="warning",
                                lifespan="on")  # fmt: skip
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self.server is not None and self.task is not None:
            self.server.should_exit = True
            await self.task
            self.server = self.task = None


@asynccontextmanager
async def mcp_backend(*, stateless: bool = False) -> AsyncIterator[McpBackend]:
    backend = McpBackend()
    await backend.start(stateless=stateless)
    try:
        yield backend
    finally:
        await backend.stop()


async def live_tool(url: str, name: str) -> dict[str, Any]:
    client = McpClient()
    try:
        conn = await client.connect(url, timeout_s=5)
        tools = await list_all(client, conn, "tools/list", "tools", timeout_s=5)
    finally:
        await client.close()
    return next(t for t in tools if t["name"] == name)


@dataclass
class McpSidecar:
    server: TestServer
    config: ConfigState
    pins: PinTable
    metrics: SidecarMetrics
    fake_url: str
    revision: int = 10

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def mcp_url(self, toolset: str = TOOLSET) -> str:
        return f"{self.url}/mcp/{toolset}"

    def put(self, key: str, value: bytes) -> None:
        self.revision += 1
        if self.config.current is None:
            kv = KeyValue(key, value, self.revision, 1, 1)
            self.config.apply_reset(self.revision, {key: kv}, "etcd")
        else:
            self.config.apply_changes(self.revision, [Change("put", key, value, self.revision)])

    def contract(self, tool: str, version: str, live: dict[str, Any], backend: str,
                 **over: Any) -> Contract:  # fmt: skip
        contract = Contract(
            tool=tool, version=version, args_schema=live["inputSchema"],
            result_schema=live.get("outputSchema") or {}, backend=backend,
            description=live.get("description", ""), **over,
        )  # fmt: skip
        self.put(KS.contract(tool, version), contract.encode())
        return contract

    def release(self, name: str, contracts: dict[str, str], mcp: dict[str, list[str]],
                prompts: dict[str, str] | None = None) -> None:  # fmt: skip
        release = Release(agent=AGENT, name=name, model=f"model-{name}",
                          base_url=f"{self.fake_url}/v1", api_key_env=KEY_VAR,
                          contracts=contracts, mcp={k: tuple(v) for k, v in mcp.items()},
                          prompts=prompts or {})  # fmt: skip
        self.put(KS.release(AGENT, name), release.encode())

    def stable(self, name: str) -> None:
        self.put(KS.route(AGENT), Route(agent=AGENT, stable=name).encode())

    def migrate(self, session: str, to: str) -> None:
        """What etcd's watch delivers after `holdfastctl pins migrate`."""
        entry = self.pins.get(session)
        assert entry is not None, f"no pin for {session}"
        moved = entry.pin.migrated(to, actor="ops", now=entry.pin.pinned_at + 1)
        self.revision += 1
        self.pins.adopt(KeyValue(KS.pin(AGENT, session), moved.encode(), self.revision, 1, 1))


@asynccontextmanager
async def mcp_sidecar(fake_url: str) -> AsyncIterator[McpSidecar]:
    s = settings()
    config = ConfigState(KS, AGENT, kinds=CONFIG_KINDS)
    upstream = Upstream(s, {KEY_VAR: PROVIDER_KEY})
    await upstream.start()
    metrics = SidecarMetrics(AGENT)
    store = MemoryStore()
    store.unavailable = True  # no etcd in this tier: pins live in the table (an outage)
    pins = PinTable(KS, AGENT)
    writer = PinWriter(store, pins, KS, metrics.pins, ttl=s.pin_ttl, max_pending=100)
    pinning = Pinning(AGENT, pins, metrics.pins, ttl=s.pin_ttl)
    app = build_http_app(
        Parts(settings=s, config=config, upstream=upstream, metrics=metrics,
              control=StaticControl(), etcd_endpoint=lambda: "none", pinning=pinning,
              tool_calls=ToolCallBudget(config, agent=AGENT))
    )  # fmt: skip
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield McpSidecar(server, config, pins, metrics, fake_url)
    finally:
        await server.close()
        await writer.close(flush_timeout=0)
        await store.close()
        await upstream.close()


def sdk_client(url: str, *, session: str | None = None, mode: str = "auto") -> Client:
    """The official SDK's client, with the agent's X-Holdfast-Session when given."""
    headers = {"X-Holdfast-Session": session} if session else {}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(10.0))
    return Client(streamable_http_client(url, http_client=http), mode=mode)


__all__ = ["Pin"]
