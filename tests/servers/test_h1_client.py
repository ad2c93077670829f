"""The provider client against deliberately awkward servers: raw sockets that split answers
anywhere, send trailers and interim answers, close mid-body, answer before reading the request,
dribble their headers, lie about framing; pooling, deadlines, cut, half-close and TLS."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from holdfast.keyspace import Release
from holdfast.net.guard import HostPolicy
from holdfast_devtools.certs import LocalPki, make_test_pki
from sidecar.settings import SidecarSettings
from sidecar.upstream import Upstream
from sidecar.upstream.client import USER_AGENT
from sidecar.upstream.h1 import (
    Client,
    ConnectFailed,
    ConnectionLost,
    MalformedResponse,
    Response,
    ResponseTimeout,
    Target,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
SECRET = "sk-echoed-secret-42"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head, await reader.readexactly(length)


@contextlib.asynccontextmanager
async def server(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """A raw server running ``handler`` per connection; yields its base URL."""
    tasks: set[asyncio.Task[None]] = set()

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            tasks.discard(task)

    srv = await asyncio.start_server(run, "127.0.0.1", 0, ssl=tls)
    port = srv.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        srv.close()
        for task in list(tasks):
            task.cancel()
        await srv.wait_closed()


async def keep_answering(
    answer: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    while True:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()


def make_client(**kw: float) -> Client:
    return Client(HostPolicy(), connect_timeout=kw.pop("connect_timeout", 2.0), **kw)  # type: ignore[arg-type]


async def call(
    client: Client, base: str, *, timeout: float = 2.0, idle: float = 0.0, body: bytes = b"{}"
) -> Response:
    return await client.request(
        Target.parse(base + "/v1/x"),
        "POST",
        {"X-Request-Id": "r"},
        body,
        head_timeout=timeout,
        idle=idle,
    )


async def fetch(
    client: Client, base: str, *, timeout: float = 2.0, body: bytes = b"{}"
) -> tuple[Response, bytes]:
    response = await call(client, base, timeout=timeout, body=body)
    try:
        data = await response.read()
    except BaseException:
        response.close()
        raise
    response.release()
    return response, data


async def test_answers_split_at_every_byte_arrive_whole_and_reuse_one_connection() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
        b"X-Ratelimit-Remaining: 7\r\n\r\n"
        b"6\r\ndata: \r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"
    )

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        cut = 1
        while True:
            await read_request(reader)
            for piece in (answer[:cut], answer[cut:]):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(0.002)  # a separate read on the other side
            cut += 1

    client = make_client()
    try:
        async with server(handler) as base:
            for _ in range(len(answer) - 1):
                response, data = await fetch(client, base)
                assert (response.status, data) == (200, b"data: abc")
                assert response.headers.get("x-ratelimit-remaining") == "7"
                assert "X-Trailer" not in response.headers  # trailers are not the head's
        assert client.opened == 1
    finally:
        await client.close()


async def test_interim_answers_are_skipped_and_bodiless_statuses_end_at_the_head() -> None:
    early = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
    answers = iter(
        [
            early + OK,
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        ]
    )

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for answer in answers:
            await read_request(reader)
            writer.write(answer)
            await writer.drain()
        await reader.read()

    client = make_client()
    try:
        async with server(handler) as base:
            response, data = await fetch(client, base)
            assert (response.status, data, response.headers.get("Link")) == (
                200,
                b'{"ok":true}',
                None,
            )
            for status in (204, 304):
                response, data = await fetch(client, base)
                assert (response.status, data) == (status, b"")
        assert client.opened == 1
    finally:
        await client.close()


async def test_close_delimited_and_connection_close_answers_are_read_whole_and_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
        await writer.drain()  # then the handler returns: the connection's end ends the body

    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1))
        await writer.drain()
        await reader.read()

    for h, expected in ((handler, b"all of it"), (closing, b'{"ok":true}')):
        client = make_client()
        try:
            async with server(h) as base:
                assert (await fetch(client, base))[1] == expected
                assert (await fetch(client, base))[1] == expected
            assert client.opened == 2
        finally:
            await client.close()


async def test_a_server_closing_mid_body_is_a_lost_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
        await writer.drain()

    client = make_client()
    try:
        async with server(handler) as base:
            with pytest.raises(ConnectionLost):
                await fetch(client, base)
            # chunked, cut before its last chunk
            async with server(
                lambda r, w: answer_once(
                    r, w, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n"
                )
            ) as base2:
                response = await call(client, base2, idle=1.0)
                assert await anext(response.content.iter_any()) == b"abc"
                with pytest.raises(ConnectionLost):
                    await anext(response.content.iter_any())
                response.close()
    finally:
        await client.close()


async def answer_once(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, answer: bytes
) -> None:
    await read_request(reader)
    writer.write(answer)
    await writer.drain()


async def test_a_server_answering_before_reading_the_body() -> None:
    big = b"x" * (4 * 1024 * 1024)

    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!")
            await writer.drain()
            length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
            await reader.readexactly(length)  # then it drains the body

    client = make_client()
    try:
        async with server(early) as base:
            response, data = await fetch(client, base, body=big)
            assert (response.status, data) == (413, b"big!")
            # The request may still have been going out when the answer ended: reused only if
            # it was sent whole; either way the next call is served.
            response, data = await fetch(client, base, body=b"{}")
            assert (response.status, data) == (413, b"big!")
    finally:
        await client.close()

    async def early_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig!"
        )
        await writer.drain()

    client = make_client()
    try:
        async with server(early_close) as base:
            try:
                response, data = await fetch(client, base, body=big)
            except ConnectionLost:
                pass  # the reset of the unread body overtook the answer: a typed error, no hang
            else:
                assert (response.status, data) == (413, b"big!")
    finally:
        await client.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage " + SECRET.encode() + b"\r\n\r\n",
        b"HTTP/1.1 2x0 " + SECRET.encode() + b"\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header " + SECRET.encode() + b"\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"v" * 70_000 + b"\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(300)) + b"\r\n",
    ],
    ids=[
        "not-http",
        "bad-status",
        "two-lengths",
        "te-and-cl",
        "bad-field",
        "upgrade",
        "huge-head",
        "many-fields",
    ],
)
async def test_malformed_answers_are_typed_and_never_quote_the_provider(answer: bytes) -> None:
    client = make_client()
    try:
        async with server(lambda r, w: answer_once(r, w, answer)) as base:
            with pytest.raises(MalformedResponse) as info:
                await fetch(client, base)
        assert SECRET not in str(info.value) and SECRET not in repr(info.value.__cause__)
    finally:
        await client.close()


async def test_slowloris_headers_hit_the_head_deadline() -> None:
    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"z" * 1000:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.02)

    client = make_client()
    try:
        async with server(dribble) as base:
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(ResponseTimeout):
                await fetch(client, base, timeout=0.3)
            assert loop.time() - started < 2.0
    finally:
        await client.close()


async def test_deadlines_head_total_and_stream_gap() -> None:
    stall = asyncio.Event()

    async def head_then_stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nfirs\r\n")
        await writer.drain()
        await stall.wait()

    client = make_client()
    try:
        async with server(head_then_stall) as base:
            # A whole answer (idle=0): the deadline covers the body too.
            with pytest.raises(ResponseTimeout):
                await fetch(client, base, timeout=0.3)
            # A stream: the head came in time, then the gap after the first chunk is too long.
            response = await call(client, base, timeout=5.0, idle=0.3)
            chunks = response.content.iter_any()
            assert await anext(chunks) == b"firs"
            with pytest.raises(ResponseTimeout):
                await anext(chunks)
            response.close()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await stall.wait()

        async with server(silent) as base:
            with pytest.raises(ResponseTimeout):
                await fetch(client, base, timeout=0.2)  # no head at all
        assert client.in_flight == 0
    finally:
        stall.set()
        await client.close()


async def test_cut_ends_waiting_calls_and_breaks_bodies_being_read() -> None:
    release = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await read_request(reader)
        if b"stream" in head:
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n")
            await writer.drain()
        await release.wait()

    client = make_client()
    try:
        async with server(slow) as base:
            waiting = asyncio.ensure_future(call(client, base, timeout=30))
            streaming = await client.request(
                Target.parse(base + "/stream"), "POST", {}, b"", head_timeout=30, idle=30
            )
            assert await anext(streaming.content.iter_any()) == b"hi"
            async with asyncio.timeout(5):
                while client.in_flight < 2:
                    await asyncio.sleep(0.01)
            shutdown = ConnectionAbortedError("drain timeout")
            assert client.cut(shutdown) == 2
            with pytest.raises(ConnectionAbortedError):
                await waiting
            with pytest.raises(ConnectionAbortedError):
                await anext(streaming.content.iter_any())
            assert not streaming.content.at_eof()
            streaming.close()
    finally:
        release.set()
        await client.close()


async def test_half_close_reads_what_the_provider_sends_after_it() -> None:
    async def until_eof(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n")
        await writer.drain()
        assert await reader.read() == b""  # the client's FIN
        writer.write(b"3\r\ntwo\r\n0\r\n\r\n")  # what it produced before noticing
        await writer.drain()

    client = make_client()
    try:
        async with server(until_eof) as base:
            response = await call(client, base, idle=2.0)
            got = [await anext(response.content.iter_any())]
            assert response.half_close()
            async for chunk in response.content.iter_any():
                got.append(chunk)
            assert b"".join(got) == b"onetwo" and response.content.at_eof()
            response.release()  # half-closed: closed, never pooled
            assert len(client.pool) == 0
    finally:
        await client.close()


async def test_pool_reuse_rules_over_real_connections() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await keep_answering(OK, reader, writer)

    client = make_client(keepalive=0.2)
    try:
        async with server(handler) as base:
            await fetch(client, base)
            await fetch(client, base)
            assert client.opened == 1  # read to its end: reused
            response = await call(client, base)
            response.close()  # not read: the connection closes
            await fetch(client, base)
            assert client.opened == 2
            async with asyncio.timeout(5):
                while len(client.pool):  # idle past keepalive: expired and closed
                    await asyncio.sleep(0.05)
            await fetch(client, base)
            assert client.opened == 3
    finally:
        await client.close()


async def test_an_idle_connection_the_server_closed_is_not_used() -> None:
    async def once_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer_once(reader, writer, OK)  # keep-alive, then the server hangs up

    client = make_client()
    try:
        async with server(once_then_close) as base:
            await fetch(client, base)
            (pooled,) = client.pool.idle(Target.parse(base).key)
            async with asyncio.timeout(5):
                while pooled.usable():  # until the server's FIN reached the idle connection
                    await asyncio.sleep(0.01)
            assert client.pool.idle(Target.parse(base).key) == [pooled]  # still listed...
            assert (await fetch(client, base))[1] == b'{"ok":true}'  # ...but never used
            assert client.opened == 2
    finally:
        await client.close()


async def test_bodies_are_relayed_byte_for_byte_never_decompressed() -> None:
    packed = gzip.compress(b'{"ok":true}')
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed)
        + packed
    )
    client = make_client()
    try:
        async with server(lambda r, w: keep_answering(answer, r, w)) as base:
            response, data = await fetch(client, base)
            assert data == packed and response.headers["content-encoding"] == "gzip"
    finally:
        await client.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> LocalPki:
    return make_test_pki(Path(tmp_path_factory.mktemp("pki")))


async def test_tls_verifies_the_certificate_and_sends_sni(pki: LocalPki) -> None:
    names: list[str | None] = []
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(pki.server.cert, pki.server.key)

    def sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name)

    server_tls.sni_callback = sni
    trusting = ssl.create_default_context(cafile=str(pki.ca))
    async with server(lambda r, w: keep_answering(OK, r, w), tls=server_tls) as base:
        named = base.replace("127.0.0.1", "localhost")
        client = Client(HostPolicy(), connect_timeout=2.0, tls=trusting)
        try:
            response, data = await fetch(client, named)
            assert (response.status, data) == (200, b'{"ok":true}')
            assert names == ["localhost"]
            assert not response.half_close()  # TLS has no half-close
        finally:
            await client.close()
        system = Client(HostPolicy(), connect_timeout=2.0)  # the system trust store
        try:
            with pytest.raises(ConnectFailed) as info:
                await fetch(system, named)
            assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
        finally:
            await system.close()


async def test_upstream_sends_exactly_the_request_headers_it_did_with_aiohttp() -> None:
    """Host, Content-Length and the sidecar's own set; nothing an HTTP library adds by itself
    (no Accept: */*, no Connection, no cookie), the body as given."""
    heads: list[bytes] = []

    async def capture(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await read_request(reader)
            heads.append(head + body)
            writer.write(OK)
            await writer.drain()

    upstream = Upstream(SidecarSettings(agent="a"), {"KEY": "sk-test"})
    await upstream.start()
    try:
        async with server(capture) as base:
            release = Release(
                agent="a", name="r", model="m", base_url=base + "/v1", api_key_env="KEY"
            )
            port = base.rsplit(":", 1)[1]
            for stream in (False, True):
                async with upstream.post(
                    release, "/chat/completions", b'{"a":1}', stream=stream, request_id="req-7"
                ) as response:
                    assert await upstream.read_body(release, response) == b'{"ok":true}'
            async with upstream.post(
                release, "/responses/resp_1", None, stream=False, request_id="req-8", method="GET"
            ) as response:
                await upstream.read_body(release, response)
    finally:
        await upstream.close()
    first, second, get = (h.decode() for h in heads)
    lines = first.split("\r\n")
    assert lines[0] == "POST /v1/chat/completions HTTP/1.1"
    assert sorted(lines[1:-2]) == sorted(
        [
            f"Host: 127.0.0.1:{port}",
            "Content-Type: application/json",
            "Accept-Encoding: identity",
            f"User-Agent: {USER_AGENT}",
            "Authorization: Bearer sk-test",
            "Accept: application/json",
            "X-Request-Id: req-7",
            "Content-Length: 7",
        ]
    )
    assert lines[-2:] == ["", '{"a":1}']
    assert "Accept: text/event-stream" in second
    assert get.startswith("GET /v1/responses/resp_1 HTTP/1.1\r\n")
    assert "Content-Length" not in get and get.endswith("\r\n\r\n")
