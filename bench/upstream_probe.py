"""A minimal HTTP/1.1 client on asyncio: the floor that ``bench.upstream_client`` measures.

``loop.create_connection`` + an ``asyncio.Protocol`` feeding httptools' response parser
(llhttp, the parser uvicorn uses); keep-alive connections in a free list. It does per call what
a production client must (build the head from pre-encoded static headers plus the per-call ones,
keep the response headers for a case-insensitive lookup, hand the body over as it arrives) and
nothing else: no timeouts, no TLS, no error handling worth the name. Not for production.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import cast
from urllib.parse import urlsplit

import httptools


class ProbeResponse:
    __slots__ = ("_conn", "headers", "status")

    def __init__(self, conn: _Conn) -> None:
        self._conn = conn
        self.status = conn.status
        self.headers = conn.headers

    async def read(self) -> bytes:
        conn = self._conn
        if not conn.done:
            conn.waiter = asyncio.get_running_loop().create_future()
            await conn.waiter
        data = b"".join(conn.body)
        conn.release()
        return data

    async def iter_any(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while True:
            if conn.body:
                data = b"".join(conn.body)
                conn.body.clear()
                yield data
                continue
            if conn.done:
                conn.release()
                return
            conn.waiter = asyncio.get_running_loop().create_future()
            await conn.waiter


class _Conn(asyncio.Protocol):
    def __init__(self, pool: ProbePool) -> None:
        self.pool = pool
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.status = 0
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.done = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self._wake()

    def on_message_complete(self) -> None:
        self.done = True
        self._wake()

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def start(self, request: bytes) -> asyncio.Future[None]:
        self.status, self.headers, self.body, self.done = 0, {}, [], False
        self.waiter = waiter = asyncio.get_running_loop().create_future()
        assert self.transport is not None
        self.transport.write(request)
        return waiter

    def release(self) -> None:
        self.pool.free.append(self)


class ProbePool:
    def __init__(self, base: str, headers: Mapping[str, str]) -> None:
        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "", parts.port or 80
        static = {
            "Host": f"{self.host}:{self.port}",
            "Content-Type": "application/json",
            "Accept-Encoding": "identity",
            "User-Agent": "holdfast-probe",
            **headers,
        }
        self.static = "".join(f"{k}: {v}\r\n" for k, v in static.items()).encode("latin-1")
        self.free: deque[_Conn] = deque()

    async def post(self, path: str, body: bytes, *, stream: bool, request_id: str) -> ProbeResponse:
        conn = self.free.pop() if self.free else await self._connect()
        accept = "text/event-stream" if stream else "application/json"
        head = (
            f"POST {path} HTTP/1.1\r\nAccept: {accept}\r\nX-Request-Id: {request_id}\r\n"
            f"Content-Length: {len(body)}\r\n"
        ).encode("latin-1")
        await conn.start(b"".join((head, self.static, b"\r\n", body)))
        return ProbeResponse(conn)

    async def _connect(self) -> _Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: _Conn(self), self.host, self.port)
        return conn

    async def close(self) -> None:
        while self.free:
            conn = self.free.pop()
            if conn.transport is not None:
                conn.transport.close()
