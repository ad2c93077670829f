"""A sidecar app with tool contracts, fed by hand, and a tool backend whose behaviour tests set."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from holdfast.keyspace import Release, Route
from holdfast.keyspace.contract import Contract
from holdfast.store import Change, KeyValue
from holdfast.store.memory import MemoryStore
from sidecar.config.kinds import CONFIG_KINDS
from sidecar.config.state import ConfigState
from sidecar.contracts.tool_proxy import ToolProxy
from sidecar.http.app import Parts, build_http_app
from sidecar.ops.metrics import SidecarMetrics
from sidecar.pins.pinning import Pinning
from sidecar.pins.table import PinTable
from sidecar.pins.writer import PinWriter
from sidecar.upstream.client import Upstream
from tests.servers.conftest import AGENT, KEY_VAR, KS, PROVIDER_KEY, settings

SEARCH_ARGS: dict[str, Any] = {
    "type": "object",
    "properties": {"query": {"type": "string", "minLength": 1}, "limit": {"type": "integer"}},
    "required": ["query"],
    "additionalProperties": False,
}
SEARCH_V1: dict[str, Any] = {
    "type": "object",
    "properties": {"hits": {"type": "array", "items": {"type": "object", "properties": {
        "title": {"type": "string"}, "url": {"type": "string"}}, "required": ["title", "url"]}}},
    "required": ["hits"],
}  # fmt: skip
SEARCH_V2: dict[str, Any] = {
    "type": "object",
    "properties": {"results": {"type": "array", "items": {"type": "string"}}},
    "required": ["results"],
}

DRIBBLE_S = 2.0  # between the parts of a dribbled body: past any contract's timeout here


@dataclass
class Backend:
    """A tool backend: ``shape`` v1/v2, or a fault (slow, huge, 500, not JSON, hang)."""

    shape: str = "v1"
    fault: str = ""
    delay: float = 0.0
    calls: int = 0
    chunks_sent: int = 0
    seen: list[Any] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    server: TestServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/search"))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        self.headers.append(dict(request.headers))
        self.seen.append(await request.json())
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fault == "500":
            return web.Response(status=500, text="boom")
        if self.fault == "400":
            return web.Response(status=400, text="unknown query syntax")
        if self.fault == "not_json":
            return web.Response(text="<html>oops</html>")
        if self.fault == "huge":
            return web.json_response({"hits": [{"title": "x" * 1000, "url": "u"}] * 2000})
        if self.fault == "huge_chunked":  # no Content-Length: the reader must stop by itself
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            await resp.write(b'{"hits": [')
            try:
                for _ in range(64):  # 4 MiB if nobody stops reading
                    await resp.write(b'{"title": "' + b"x" * (64 * 1024 - 32) + b'", "url": "u"},')
                    self.chunks_sent += 1
                    await asyncio.sleep(0.01)
            except (ConnectionResetError, RuntimeError):
                return resp
            await resp.write(b"{}]}")
            return resp
        if self.fault == "dribble":
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            for part in (b'{"hits": [', b"]}"):
                await resp.write(part)
                await asyncio.sleep(DRIBBLE_S)
            return resp
        if self.shape == "v1":
            return web.json_response({"hits": [{"title": "Holdfast", "url": "https://x/1"}]})
        return web.json_response({"results": ["Holdfast"]})


@asynccontextmanager
async def backend_server() -> AsyncIterator[Backend]:
    backend = Backend()
    app = web.Application()
    app.router.add_post("/search", backend.handle)
    backend.server = TestServer(app, host="127.0.0.1")
    await backend.server.start_server()
    try:
        yield backend
    finally:
        await backend.server.close()


@dataclass
class ContractSidecar:
    server: TestServer
    config: ConfigState
    metrics: SidecarMetrics
    fake_url: str
    revision: int = 10

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def proxy(self) -> ToolProxy:
        """The app's ``POST /tools`` handler object (tests set its clock)."""
        for route in self.server.app.router.routes():
            owner = getattr(route.handler, "__self__", None)
            if isinstance(owner, ToolProxy):
                return owner
        raise LookupError("the app serves no POST /tools/{tool}")

    def put(self, key: str, value: bytes) -> None:
        self.revision += 1
        if self.config.current is None:
            kv = KeyValue(key, value, self.revision, 1, 1)
            self.config.apply_reset(self.revision, {key: kv}, "etcd")
        else:
            self.config.apply_changes(self.revision, [Change("put", key, value, self.revision)])

    def contract(
        self,
        version: str,
        result: dict[str, Any],
        *,
        tool: str = "search",
        args: dict[str, Any] = SEARCH_ARGS,
        **over: Any,
    ) -> Contract:
        contract = Contract(
            tool=tool, version=version, args_schema=args, result_schema=result, **over
        )
        self.put(KS.contract(tool, version), contract.encode())
        return contract

    def release(
        self, name: str, contracts: dict[str, str], policy: str = "", provider: str = "openai"
    ) -> None:
        release = Release(agent=AGENT, name=name, model=f"model-{name}",
                          base_url=f"{self.fake_url}/v1", api_key_env=KEY_VAR,
                          contracts=contracts, contract_policy=policy,
                          provider=provider)  # fmt: skip
        self.put(KS.release(AGENT, name), release.encode())

    def stable(self, name: str) -> None:
        self.put(KS.route(AGENT), Route(agent=AGENT, stable=name).encode())


@asynccontextmanager
async def contract_sidecar(fake_url: str, **parts: Any) -> AsyncIterator[ContractSidecar]:
    """``parts``: further ``Parts`` of the app (a tracer...)."""
    s = settings()
    config = ConfigState(KS, AGENT, kinds=CONFIG_KINDS)
    upstream = Upstream(s, {KEY_VAR: PROVIDER_KEY})
    await upstream.start()
    metrics = SidecarMetrics(AGENT)
    store = MemoryStore()
    store.unavailable = True  # no etcd in this tier: an outage, as in tests/servers/conftest.py
    pins = PinTable(KS, AGENT)
    writer = PinWriter(store, pins, KS, metrics.pins, ttl=s.pin_ttl, max_pending=100)
    pinning = Pinning(AGENT, pins, metrics.pins, ttl=s.pin_ttl)
    from tests.servers.conftest import StaticControl

    app = build_http_app(
        Parts(
            settings=s,
            config=config,
            upstream=upstream,
            metrics=metrics,
            control=StaticControl(),
            etcd_endpoint=lambda: "none",
            pinning=pinning,
            **parts,
        )
    )
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield ContractSidecar(server, config, metrics, fake_url)
    finally:
        await server.close()
        await writer.close(flush_timeout=0)
        await store.close()
        await upstream.close()


def sse_payloads(raw: bytes) -> list[Any]:
    out: list[Any] = []
    for event in raw.split(b"\n\n"):
        for line in event.splitlines():
            if line.startswith(b"data: ") and line[6:] != b"[DONE]":
                out.append(json.loads(line[6:]))
    return out
