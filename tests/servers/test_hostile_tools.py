"""Tier 2: no SSRF through a tool contract. A contract record whose backend is a metadata or
link-local address, a name that resolves to one, or a backend that redirects, gives the model
a clear MCP error result, and nothing is reached beyond the backend the contract names."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from holdfast_devtools import procs
from tests.servers.contract_stack import SEARCH_V1, ContractSidecar, contract_sidecar

FORBIDDEN_BACKENDS = [
    "http://169.254.169.254/latest/meta-data/iam",  # AWS/GCP/Azure metadata
    "http://[fd00:ec2::254]/latest/meta-data",  # AWS metadata over IPv6
    "http://metadata.google.internal/computeMetadata/v1",
    "http://[fe80::1]:8080/search",  # link-local
    "http://100.100.100.200/latest/meta-data",  # Alibaba Cloud metadata
    "http://10.1.2.3/search",  # private: only with --allow-upstream-host
]


@dataclass
class Hits:
    """A local server that counts every request; ``/redirect`` answers 307 to ``target``."""

    target: str = ""
    seen: list[str] = field(default_factory=list)
    server: TestServer | None = None

    def url(self, path: str) -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request.path)
        if request.path == "/redirect":
            raise web.HTTPTemporaryRedirect(self.target)
        return web.json_response({"hits": [{"title": "reached", "url": "u"}]})


@pytest.fixture
async def hits() -> AsyncIterator[Hits]:
    found = Hits()
    app = web.Application()
    app.router.add_post("/{tail:.*}", found.handle)
    found.server = TestServer(app, host="127.0.0.1")
    await found.server.start_server()
    yield found
    await found.server.close()


async def call(sut: ContractSidecar, session: str) -> tuple[int, dict[str, str], Any]:
    headers = {"X-Holdfast-Session": session}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sut.url}/tools/search", json={"query": "q"}, headers=headers) as r:
            return r.status, dict(r.headers), await r.json()


def with_backend(sut: ContractSidecar, name: str, backend: str) -> None:
    sut.contract(name, SEARCH_V1, backend=backend, timeout_s=5.0, idempotent=True)
    sut.release(f"r-{name.replace('.', '-')}", {"search": name})
    sut.stable(f"r-{name.replace('.', '-')}")


@pytest.mark.parametrize("backend", FORBIDDEN_BACKENDS)
async def test_contract_backend_at_a_forbidden_address_is_an_error_result(
    fakellm: procs.ManagedProcess, backend: str
) -> None:
    async with contract_sidecar(fakellm.url) as sut:
        with_backend(sut, "1.0.0", backend)
        started = time.monotonic()
        status, headers, result = await call(sut, "ssrf")
        # refused before any connection: far quicker than the contract's 5 s timeout, and an
        # idempotent tool is not retried against it either
        assert time.monotonic() - started < 1.0
    assert status == 200 and result["isError"] is True
    assert headers["X-Holdfast-Tool-Outcome"] == "host_not_allowed"
    assert result["_meta"]["holdfast"]["outcome"] == "host_not_allowed"
    text = result["content"][0]["text"]
    assert "the tool backend" in text and ("metadata" in text or "not an allowed" in text), text


class RebindingResolver:
    """DNS that answers the metadata address for an innocent-looking name."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[Any]:
        self.asked.append(host)
        answer = {"hostname": host, "host": "169.254.169.254", "port": port, "family": family}
        return [answer | {"proto": 0, "flags": 0}]

    async def close(self) -> None:
        return None


async def test_backend_name_that_resolves_to_metadata_is_refused_at_connect_time(
    fakellm: procs.ManagedProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    dns = RebindingResolver()
    monkeypatch.setattr(aiohttp, "ThreadedResolver", lambda: dns)
    async with contract_sidecar(fakellm.url) as sut:
        with_backend(sut, "1.0.0", "http://tools.innocent.example:8080/search")
        status, headers, result = await call(sut, "rebind")
    assert status == 200 and result["isError"] is True
    assert headers["X-Holdfast-Tool-Outcome"] == "host_not_allowed"
    assert "169.254.169.254" in result["content"][0]["text"]
    assert dns.asked and set(dns.asked) == {"tools.innocent.example"}


@pytest.mark.parametrize("target", ["metadata", "allowed"])
async def test_redirecting_backend_is_never_followed(
    fakellm: procs.ManagedProcess, hits: Hits, target: str
) -> None:
    """Neither to the metadata service nor to another backend that would itself be allowed."""
    hits.target = (
        "http://169.254.169.254/latest/meta-data" if target == "metadata" else hits.url("/other")
    )
    async with contract_sidecar(fakellm.url) as sut:
        with_backend(sut, "1.0.0", hits.url("/redirect"))
        status, headers, result = await call(sut, f"redirect-{target}")
    assert status == 200 and result["isError"] is True
    assert headers["X-Holdfast-Tool-Outcome"] == "redirect_refused"
    assert "redirect" in result["content"][0]["text"]
    assert hits.seen == ["/redirect"]  # one call to the named backend; the target never reached
