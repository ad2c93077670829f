"""Limits and hostile input against the real sidecar app (in-process) and the real fake LLM."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from holdfast_devtools import procs
from sidecar.settings.limits import LimitSettings
from sidecar.upstream.h1.dns import GuardedDns
from tests.servers.conftest import PROVIDER_KEY, SidecarUnderTest, start_sidecar

CHAT = "/v1/chat/completions"
BODY = {"model": "support", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def echo() -> AsyncIterator[tuple[TestServer, list[dict[str, str]]]]:
    """A provider that records every header it receives; /redirect answers 302 elsewhere."""
    seen: list[dict[str, str]] = []

    async def chat(request: web.Request) -> web.Response:
        seen.append({k.lower(): v for k, v in request.headers.items()})
        answer = {"id": "x", "object": "chat.completion", "choices": [], "usage": {}}
        return web.json_response(answer, headers={"Keep-Alive": "timeout=9", "X-Private": "1"})

    async def redirect(request: web.Request) -> web.Response:
        seen.append({"redirected": request.path})
        raise web.HTTPFound("http://127.0.0.1:1/v1/chat/completions")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/redirect/chat/completions", redirect)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server, seen
    await server.close()


async def start(fakellm: procs.ManagedProcess, **limits: Any) -> SidecarUnderTest:
    sut = await start_sidecar(fakellm.url, limits=LimitSettings(**limits))
    sut.add_release("r1", "model-one")
    sut.set_stable("r1")
    return sut


async def raw_exchange(port: int, data: bytes, *, wait: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(65536), wait)
    finally:
        writer.close()


@pytest.mark.parametrize(
    "path", ["/status", "/metrics", "/healthz", "/readyz", "/v1/models", "/ofrep/v1/evaluate/flags"]
)
async def test_foreign_host_header_refused(fakellm: procs.ManagedProcess, path: str) -> None:
    sut = await start(fakellm)
    try:
        async with aiohttp.ClientSession() as http:
            method = http.post if path.startswith("/ofrep") else http.get
            async with method(sut.url + path, headers={"Host": "rebind.evil.example"}) as resp:
                assert resp.status == 421
                err = (await resp.json())["error"]
                assert err["code"] == "misdirected_request"
            async with http.get(sut.url + "/healthz", headers={"Host": "localhost:1"}) as resp:
                assert resp.status == 200
    finally:
        await sut.server.close()


async def test_allowed_host_flag(fakellm: procs.ManagedProcess) -> None:
    sut = await start(fakellm, allowed_hosts=("sidecar.pod.local",))
    try:
        async with aiohttp.ClientSession() as http:
            hdr = {"Host": "sidecar.pod.local:8787"}
            async with http.get(sut.url + "/healthz", headers=hdr) as resp:
                assert resp.status == 200
    finally:
        await sut.server.close()


async def test_concurrency_cap_503_with_retry_after(fakellm: procs.ManagedProcess) -> None:
    sut = await start(fakellm, max_concurrent=2, retry_after=3)
    try:
        async with aiohttp.ClientSession() as http:
            await http.put(f"{fakellm.url}/_control/models/model-one", json={"latency_ms": 600})
            slow = [asyncio.create_task(http.post(sut.url + CHAT, json=BODY)) for _ in range(2)]
            await asyncio.sleep(0.25)
            async with http.post(sut.url + CHAT, json=BODY) as resp:
                assert resp.status == 503
                assert resp.headers["Retry-After"] == "3"
                assert (await resp.json())["error"]["code"] == "overloaded"
            async with http.get(sut.url + "/status") as resp:  # on-call endpoints stay up
                assert resp.status == 200
            for task in slow:
                resp = await task
                assert resp.status == 200
                resp.release()
            async with http.post(sut.url + CHAT, json=BODY) as resp:  # slots given back
                assert resp.status == 200
    finally:
        await sut.server.close()


async def test_deep_and_hostile_json_refused(fakellm: procs.ManagedProcess) -> None:
    sut = await start(fakellm, max_json_depth=16)
    nested = {"model": "support", "messages": [{"role": "user", "content": "x"}], "meta": []}
    inner: list[Any] = nested["meta"]  # type: ignore[assignment]
    for _ in range(20):
        inner.append([])
        inner = inner[0]
    bodies = [
        json.dumps(nested).encode(),
        b"[" * 60_000,
        b'{"model":"support","temperature":NaN}',
        b'{"model":"support","n":' + b"9" * 5000 + b"}",
        b'{"model":"support","user":"\\ud800"}',
        b'{"model":"gpt-4o\xff"}',
    ]
    try:
        async with aiohttp.ClientSession() as http:
            for raw in bodies:
                hdr = {"Content-Type": "application/json"}
                async with http.post(sut.url + CHAT, data=raw, headers=hdr) as resp:
                    assert resp.status == 400, raw[:60]
                    assert (await resp.json())["error"]["code"] == "invalid_request"
    finally:
        await sut.server.close()


@pytest.mark.parametrize("path", [CHAT, "/v1/embeddings", "/tools/search"])
async def test_chunked_body_over_the_limit_is_413_and_nothing_forwarded(
    fakellm: procs.ManagedProcess, path: str
) -> None:
    """No Content-Length to check up front: the limit holds while the body streams in."""
    sut = await start(fakellm)  # max_body_bytes 64 KiB in this tier
    filler = json.dumps(BODY)[:-1].encode() + b', "pad": "'

    async def body() -> AsyncIterator[bytes]:
        yield filler
        for _ in range(64):  # 256 KiB in 4 KiB chunks, four times the limit
            yield b"a" * 4096
        yield b'"}'

    try:
        async with aiohttp.ClientSession() as http:
            await http.post(f"{fakellm.url}/_control/reset")
            hdr = {"Content-Type": "application/json"}
            async with http.post(sut.url + path, data=body(), headers=hdr) as resp:
                assert resp.request_info.headers.get("Transfer-Encoding") == "chunked"
                assert resp.status == 413
                err = (await resp.json())["error"]
                assert err["code"] == "request_too_large" and "65536" in err["message"]
            async with http.get(f"{fakellm.url}/_control/requests") as resp:
                assert (await resp.json())["requests"] == []
    finally:
        await sut.server.close()


async def test_header_count_and_size_limits(fakellm: procs.ManagedProcess) -> None:
    sut = await start(fakellm, max_headers=20, max_header_bytes=2048)
    try:
        async with aiohttp.ClientSession() as http:
            many = {f"X-H{i}": "v" for i in range(30)}
            async with http.get(sut.url + "/healthz", headers=many) as resp:
                assert resp.status in (400, 431)
            async with http.get(sut.url + "/healthz", headers={"X-Big": "v" * 4000}) as resp:
                assert resp.status in (400, 431)
            async with http.get(sut.url + "/healthz", headers={"X-Ok": "v" * 1000}) as resp:
                assert resp.status == 200
    finally:
        await sut.server.close()


async def test_slowloris_headers_cut_off(fakellm: procs.ManagedProcess) -> None:
    sut = await start(fakellm, idle_timeout=1.0)
    port = sut.server.port
    assert port is not None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        started = time.monotonic()
        closed_after = None
        for i in range(40):  # dribble a header every 0.1 s, never finishing the head
            await asyncio.sleep(0.1)
            if reader.at_eof():
                closed_after = time.monotonic() - started
                break
            try:
                writer.write(f"X-Drip-{i}: a\r\n".encode())
                await writer.drain()
            except ConnectionError:
                closed_after = time.monotonic() - started
                break
            try:
                got = await asyncio.wait_for(reader.read(1), 0.01)
                if got == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                pass
        writer.close()
        assert closed_after is not None and closed_after < 2.5, closed_after
        # An idle connection that sends nothing is closed too.
        idle = await raw_exchange(port, b"", wait=3.0)
        assert idle == b""
    finally:
        await sut.server.close()


async def test_conflicting_framing_refused(fakellm: procs.ManagedProcess) -> None:
    sut = await start(fakellm)
    port = sut.server.port
    assert port is not None
    body = json.dumps(BODY).encode()
    head = f"POST {CHAT} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    smuggles = [
        head + f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n",
        head + f"Content-Length: {len(body)}\r\nContent-Length: {len(body) + 5}\r\n\r\n",
        head + "Transfer-Encoding: chunked, identity\r\n\r\n",
        head + f"Content-Length: +{len(body)}\r\n\r\n",
        head + f"X-Request-Id: a\x00b\r\nContent-Length: {len(body)}\r\n\r\n",
        head + f"X-Holdfast-Session: a\rb\r\nContent-Length: {len(body)}\r\n\r\n",
    ]
    try:
        async with aiohttp.ClientSession() as http:
            await http.post(f"{fakellm.url}/_control/reset")
            for raw in smuggles:
                answer = await raw_exchange(port, raw.encode() + body)
                assert answer.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), (raw, answer[:80])
            async with http.get(f"{fakellm.url}/_control/requests") as resp:
                assert (await resp.json()) in ([], {"requests": []})
    finally:
        await sut.server.close()


async def test_hop_by_hop_and_agent_credentials_not_forwarded(
    fakellm: procs.ManagedProcess, echo: tuple[TestServer, list[dict[str, str]]]
) -> None:
    server, seen = echo
    sut = await start(fakellm)
    sut.add_release("r9", "m", base_url=str(server.make_url("/v1")))
    sut.set_stable("r9")
    sent = {
        "Authorization": "Bearer agent-own-key",
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "secret",
        "Keep-Alive": "timeout=5",
        "TE": "trailers",
        "Proxy-Authorization": "Basic eA==",
        "Proxy-Connection": "keep-alive",
        "Upgrade-Insecure-Requests": "1",
        "Cookie": "session=abc",
    }
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(sut.url + CHAT, json=BODY, headers=sent) as resp:
                assert resp.status == 200
                assert "X-Private" not in resp.headers
                assert resp.headers.get("Keep-Alive") is None
        got = seen[-1]
        assert got["authorization"] == f"Bearer {PROVIDER_KEY}"
        for name in (
            "x-hop",
            "keep-alive",
            "te",
            "proxy-authorization",
            "proxy-connection",
            "upgrade-insecure-requests",
            "cookie",
            "upgrade",
            "trailer",
        ):
            assert name not in got, name
        assert all("\r" not in v and "\n" not in v and "\x00" not in v for v in got.values())
    finally:
        await sut.server.close()


@pytest.mark.parametrize("bad", ["\n", "\r\nX-Injected: 1", " ", "\x00"])
async def test_provider_key_with_whitespace_or_control_characters_is_never_sent(
    fakellm: procs.ManagedProcess, bad: str
) -> None:
    """A key read from a secret file with its trailing newline: refused naming the variable,
    never the key, and nothing reaches the provider (no header injection, no traceback)."""
    sut = await start(fakellm)
    sut.environ["BAD_KEY_VAR"] = PROVIDER_KEY + bad
    sut.add_release("nl", "model-one", key_var="BAD_KEY_VAR")
    sut.set_stable("nl")
    try:
        async with aiohttp.ClientSession() as http:
            await http.post(f"{fakellm.url}/_control/reset")
            async with http.post(sut.url + CHAT, json=BODY) as resp:
                assert resp.status == 503
                raw = await resp.text()
            async with http.get(f"{fakellm.url}/_control/requests") as got:
                assert (await got.json())["requests"] == []
        err = json.loads(raw)["error"]
        assert err["code"] == "provider_key_missing" and "BAD_KEY_VAR" in err["message"]
        assert PROVIDER_KEY not in raw
    finally:
        await sut.server.close()


async def test_ssrf_link_local_and_unlisted_providers_refused(
    fakellm: procs.ManagedProcess,
) -> None:
    sut = await start(fakellm)
    try:
        async with aiohttp.ClientSession() as http:
            for url in (
                "http://169.254.169.254/latest",
                "http://metadata.google.internal/v1",
                "http://[fe80::1]:80/v1",
                "http://10.0.0.1/v1",
            ):
                sut.add_release("bad", "m", base_url=url)
                sut.set_stable("bad")
                async with http.post(sut.url + CHAT, json=BODY) as resp:
                    assert resp.status == 502
                    assert (await resp.json())["error"]["code"] == "upstream_host_not_allowed"
        strict = await start(fakellm, upstream_hosts=("api.openai.com",))
        try:
            async with aiohttp.ClientSession() as http:
                async with http.post(strict.url + CHAT, json=BODY) as resp:  # fake: 127.0.0.1
                    assert (await resp.json())["error"]["code"] == "upstream_host_not_allowed"
        finally:
            await strict.server.close()
    finally:
        await sut.server.close()


class RebindingResolver:
    """DNS that answers a metadata address for an innocent-looking name."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def query(self, _loop: object, host: str, port: int) -> list[Any]:
        self.asked.append(host)
        return [(socket.AF_INET, "169.254.169.254")]


async def test_dns_rebinding_refused_at_connect_time(
    fakellm: procs.ManagedProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns = RebindingResolver()
    monkeypatch.setattr(GuardedDns, "query", staticmethod(fake_dns.query))
    sut = await start(fakellm)
    sut.add_release("dns", "m", base_url="http://innocent.example.com:9/v1")
    sut.set_stable("dns")
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(sut.url + CHAT, json=BODY) as resp:
                assert resp.status == 502
                err = (await resp.json())["error"]
                assert err["code"] == "upstream_host_not_allowed"
                assert "169.254.169.254" in err["message"]
        assert fake_dns.asked == ["innocent.example.com"]
    finally:
        await sut.server.close()


async def test_provider_redirect_not_followed(
    fakellm: procs.ManagedProcess, echo: tuple[TestServer, list[dict[str, str]]]
) -> None:
    server, seen = echo
    sut = await start(fakellm)
    sut.add_release("redir", "m", base_url=str(server.make_url("/redirect")))
    sut.set_stable("redir")
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(sut.url + CHAT, json=BODY) as resp:
                assert resp.status == 502
                assert "redirect" in (await resp.json())["error"]["message"]
                assert "Location" not in resp.headers
        assert seen == [{"redirected": "/redirect/chat/completions"}]
    finally:
        await sut.server.close()
