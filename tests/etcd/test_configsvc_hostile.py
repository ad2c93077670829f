"""configsvc against hostile input: Host check (DNS rebinding), upstream allowlist at admission,
bounded JSON bodies, header limits and slowloris, on a real listener over a real etcd."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from configsvc.contracts.api import ContractsApi
from configsvc.contracts.ops import ContractOps
from configsvc.http.auth import Authorizer
from configsvc.releases.ops import ConfigService
from configsvc.server.app import build_app
from configsvc.server.limits import ServeLimits, server_options
from configsvc.server.run import start_site
from holdfast.keyspace import Keyspace
from holdfast.store.etcd import EtcdStore
from holdfast_devtools.etcd_local import EtcdNode

pytestmark = pytest.mark.etcd

TOKEN = "hostile-token-0123456789"
AGENT = "support"
AUTH = {"Authorization": f"Bearer {TOKEN}", "X-Holdfast-Actor": "alice"}
ARGS_SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}}}


@dataclass
class Served:
    url: str
    port: int
    http: aiohttp.ClientSession

    async def post(self, path: str, data: bytes, **headers: str) -> tuple[int, dict[str, Any]]:
        async with self.http.post(self.url + path, data=data, headers={**AUTH, **headers}) as r:
            return r.status, await r.json()


@asynccontextmanager
async def serving(etcd: EtcdNode, env: str, limits: ServeLimits) -> AsyncIterator[Served]:
    store = EtcdStore([etcd.client_url], timeout=2.0)
    await store.connect()
    service = ConfigService(store, Keyspace(env))
    app = build_app(
        service,
        Authorizer(TOKEN),
        extra=[ContractsApi(ContractOps(service))],
        hosts=limits.accepted_hosts("127.0.0.1"),
        upstream=limits.host_policy(),
    )
    runner, port = await start_site(app, "127.0.0.1", 0, options=server_options(limits))
    try:
        async with aiohttp.ClientSession() as http:
            yield Served(f"http://127.0.0.1:{port}", port, http)
    finally:
        await runner.cleanup()
        await store.close()


@pytest.fixture
async def api(etcd_node: EtcdNode, etcd_env: str) -> AsyncIterator[Served]:
    limits = ServeLimits(allowed_hosts=("cfg.example.test",), idle_timeout=1.0, max_headers=20)
    async with serving(etcd_node, etcd_env, limits) as served:
        yield served


def release(name: str, base_url: str) -> bytes:
    return json.dumps({"release": name, "model": "m", "base_url": base_url}).encode()


async def test_host_header_checked_against_dns_rebinding(api: Served) -> None:
    for host, status in [
        ("evil.example", 421),
        ("127.0.0.1.nip.io", 421),
        ("cfg.example.test:8700", 200),
        (f"localhost:{api.port}", 200),
        ("[::1]", 200),
    ]:
        async with api.http.get(api.url + "/healthz", headers={"Host": host}) as r:
            body = await r.json()
            assert r.status == status, (host, body)
            if status == 421:
                assert body["error"]["code"] == "misdirected_request"
                assert "--allowed-host" in body["error"]["message"]
    # a mutation with a valid token is refused too: the Host check runs before anything else
    path = f"/v1/agents/{AGENT}/releases"
    status, body = await api.post(path, release("r1", "http://127.0.0.1:9/v1"), Host="evil.example")
    assert (status, body["error"]["code"]) == (421, "misdirected_request")


@pytest.mark.parametrize(
    ("base_url", "rule"),
    [
        ("http://169.254.169.254/latest", "link-local/metadata"),
        ("http://[fe80::1]:8080/v1", "link-local/metadata"),
        ("http://metadata.google.internal/v1", "cloud metadata service"),
        ("http://10.0.0.7:8000/v1", "not an allowed address"),
        ("http://[::ffff:169.254.169.254]/v1", "link-local/metadata"),
    ],
)
async def test_release_at_a_refused_host_is_400_naming_the_rule(
    api: Served, base_url: str, rule: str
) -> None:
    status, body = await api.post(f"/v1/agents/{AGENT}/releases", release("bad", base_url))
    assert status == 400, body
    assert body["error"]["code"] == "upstream_host_refused"
    assert body["error"]["param"] == "base_url"
    assert rule in body["error"]["message"]
    async with api.http.get(api.url + f"/v1/agents/{AGENT}/releases") as r:
        assert r.status == 404  # nothing written: the agent has no release at all


async def test_contract_backend_at_a_refused_host_is_400(api: Served) -> None:
    contract = {
        "args_schema": ARGS_SCHEMA,
        "result_schema": {"type": "object"},
        "backend": "http://169.254.169.254/tools",
    }
    status, body = await api.post("/v1/contracts/search", json.dumps(contract).encode())
    assert (status, body["error"]["code"], body["error"]["param"]) == (
        400,
        "upstream_host_refused",
        "backend",
    )
    contract["backend"] = "http://127.0.0.1:9/tools"
    status, body = await api.post("/v1/contracts/search", json.dumps(contract).encode())
    assert status == 201, body


async def test_allowlist_patterns_replace_the_default(etcd_node: EtcdNode, etcd_env: str) -> None:
    limits = ServeLimits(upstream_hosts=("10.0.0.0/8", "*.provider.test"))
    async with serving(etcd_node, etcd_env, limits) as api:
        path = f"/v1/agents/{AGENT}/releases"
        ok = [("a", "http://10.0.0.7:8000/v1"), ("b", "https://eu.provider.test/v1")]
        for name, url in ok:
            status, body = await api.post(path, release(name, url))
            assert status == 201, body
        for name, url in [("c", "https://api.openai.com/v1"), ("d", "http://127.0.0.1:9/v1")]:
            status, body = await api.post(path, release(name, url))
            assert (status, body["error"]["code"]) == (400, "upstream_host_refused"), url
            assert "not in the allowed upstream hosts" in body["error"]["message"] or (
                "not an allowed address" in body["error"]["message"]
            )


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (
            b'{"release": "r", "model": "m", "base_url": ' + b"[" * 5000 + b"]" * 5000 + b"}",
            "deeper",
        ),
        (b'{"release": "r", "model": "m", "base_url": ' + b"9" * 5000 + b"}", "not valid JSON"),
        (b'{"release": "r\\ud800", "model": "m", "base_url": "http://127.0.0.1:9"}', "surrogate"),
        (b'{"release": "r", "model": NaN, "base_url": "http://127.0.0.1:9"}', "NaN"),
    ],
)
async def test_hostile_json_bodies_are_400(api: Served, raw: bytes, words: str) -> None:
    status, body = await api.post(f"/v1/agents/{AGENT}/releases", raw)
    assert (status, body["error"]["code"]) == (400, "invalid_request"), body
    assert words in body["error"]["message"]


async def raw_exchange(port: int, data: bytes, *, wait: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(65536), wait)
    finally:
        writer.close()


async def test_too_many_headers_refused(api: Served) -> None:
    headers = "".join(f"X-Filler-{i}: {i}\r\n" for i in range(40))
    answer = await raw_exchange(
        api.port, f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode()
    )
    assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), answer[:200]


async def test_slowloris_connection_closed_after_idle_timeout(api: Served) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    started = time.monotonic()
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    await writer.drain()
    closed_at = None
    try:
        for _ in range(40):  # one header byte every 0.1 s: the head never completes
            writer.write(b"X")
            await writer.drain()
            if reader.at_eof():
                closed_at = time.monotonic()
                break
            try:
                await asyncio.wait_for(reader.read(1024), 0.1)
            except TimeoutError:
                continue
            closed_at = time.monotonic()
            break
    except (ConnectionResetError, BrokenPipeError):
        closed_at = time.monotonic()
    finally:
        writer.close()
    assert closed_at is not None, "the dribbling connection was never closed"
    assert closed_at - started < 3.0
