"""Just enough HTTP/1.1 for a load generator: one pre-encoded request per target, and an
incremental parser of the answers that tracks framing (Content-Length or chunked), counts body
bytes, transfer-encoding chunks and SSE events, and keeps nothing else."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, cast
from urllib.parse import urlsplit

CRLF: Final = b"\r\n"
HEAD_END: Final = b"\r\n\r\n"
MAX_HEAD: Final = 64 * 1024


class ProtocolError(RuntimeError):
    """The server's answer is not HTTP/1.1 that this client understands."""


@dataclass(frozen=True, slots=True)
class Target:
    """One endpoint and the single request the load sends to it."""

    host: str
    port: int
    path: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def chat(
        cls, base_url: str, payload: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> Target:
        """POST ``payload`` to ``{base_url}/v1/chat/completions``."""
        parts = urlsplit(base_url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"need http://host:port, got {base_url!r}")
        body = json.dumps(payload, separators=(",", ":")).encode()
        path = parts.path.rstrip("/") + "/v1/chat/completions"
        return cls(parts.hostname, parts.port, path, body, tuple((headers or {}).items()))

    def with_header(self, name: str, value: str) -> Target:
        """The same request with one more header (a session id, a peer's routing header)."""
        return Target(self.host, self.port, self.path, self.body, (*self.headers, (name, value)))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def encode(self) -> bytes:
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Content-Type: application/json",
            f"Content-Length: {len(self.body)}",
            *(f"{name}: {value}" for name, value in self.headers),
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass(slots=True)
class Reply:
    """One finished exchange; times are ``time.perf_counter()`` seconds."""

    status: int
    sent: float
    first_byte: float
    finished: float
    body_bytes: int
    events: int
    chunks: int

    @property
    def latency(self) -> float:
        return self.finished - self.sent

    @property
    def ttfb(self) -> float:
        return self.first_byte - self.sent


class ResponseParser:
    """Incremental parser of one HTTP/1.1 response at a time on a keep-alive connection.

    Counts body bytes, transfer-encoding chunks (one per write of a relaying server) and SSE
    events (blank-line terminated), without keeping the body.
    """

    __slots__ = (
        "_buf",
        "_chunked",
        "_remaining",
        "_state",
        "_tail",
        "body_bytes",
        "chunks",
        "events",
        "first_byte",
        "keep_alive",
        "status",
    )

    def __init__(self) -> None:
        self._buf = bytearray()
        self.reset()

    def reset(self) -> None:
        self._state = "head"  # head | length | size | data | data_crlf | trailer | done
        self._chunked = False
        self._remaining = 0
        self._tail = b""
        self.status = 0
        self.body_bytes = 0
        self.chunks = 0
        self.events = 0
        self.first_byte = 0.0
        self.keep_alive = True

    def feed(self, data: bytes, now: float) -> bool:
        """Take bytes off the wire; True once the response is complete."""
        buf = self._buf
        buf += data
        while True:
            state = self._state
            if state == "head":
                end = buf.find(HEAD_END)
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        raise ProtocolError("response head too large")
                    return False
                self._parse_head(bytes(buf[:end]))
                del buf[: end + 4]
                self._state = "size" if self._chunked else "length"
                if not self._chunked and self._remaining == 0:
                    self._state = "done"
            elif state in ("length", "data"):  # a sized body, or one chunk's data
                take = min(len(buf), self._remaining)
                if take:
                    self._body(bytes(buf[:take]), now)
                    del buf[:take]
                    self._remaining -= take
                if self._remaining:
                    return False
                self._state = "done" if state == "length" else "data_crlf"
            elif state == "size":
                end = buf.find(CRLF)
                if end < 0:
                    return False
                size = int(bytes(buf[:end]).split(b";", 1)[0], 16)
                del buf[: end + 2]
                self._remaining = size
                self._state = "data" if size else "trailer"
                if size:
                    self.chunks += 1
            elif state == "data_crlf":
                if len(buf) < 2:
                    return False
                del buf[:2]
                self._state = "size"
            elif state == "trailer":
                end = buf.find(CRLF)
                if end < 0:
                    return False
                del buf[: end + 2]
                if end == 0:
                    self._state = "done"
            else:
                if buf:
                    raise ProtocolError("bytes after the end of a response")
                return True

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(CRLF)
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ProtocolError(f"bad status line {lines[0][:80]!r}")
        self.status = int(parts[1])
        length = -1
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                self._chunked = True
            elif name == b"connection" and b"close" in value.lower():
                self.keep_alive = False
        if not self._chunked:
            if length < 0:
                raise ProtocolError("response has neither Content-Length nor chunked framing")
            self._remaining = length

    def _body(self, data: bytes, now: float) -> None:
        if not self.body_bytes:
            self.first_byte = now
        self.body_bytes += len(data)
        joined = self._tail + data
        self.events += joined.count(b"\n\n")
        self._tail = data[-1:]


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = ResponseParser()
        self._waiter: asyncio.Future[Reply] | None = None
        self._sent = 0.0
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(cls, host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        try:
            complete = self._parser.feed(data, now)
        except (ProtocolError, ValueError) as exc:
            waiter.set_exception(exc)
            self.close()
            return
        if complete:
            p = self._parser
            first = p.first_byte or now
            waiter.set_result(
                Reply(p.status, self._sent, first, now, p.body_bytes, p.events, p.chunks)
            )
            if not p.keep_alive:
                self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError(f"connection lost: {exc!r}"))

    async def send(self, request: bytes) -> Reply:
        if self.closed or self._transport is None:
            raise ConnectionError("connection is closed")
        self._parser.reset()
        self._waiter = asyncio.get_running_loop().create_future()
        self._sent = time.perf_counter()
        self._transport.write(request)
        return await self._waiter

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()
