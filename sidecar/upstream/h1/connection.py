"""One HTTP/1.1 connection to a provider: an ``asyncio.Protocol`` over httptools' llhttp parser.

One call at a time (no pipelining). The call's state lives on the connection: its phase, its
deadline (read by the client's ``Sweeper``), the head's fields as they arrive, and the body.
Failures reach whoever waits: the caller awaiting the head, or the reader of the body. Nothing
the provider sent is ever quoted in an error (a provider may echo request headers, the key
among them).
"""

from __future__ import annotations

import asyncio
import math
from typing import Final, Protocol, cast

import httptools

from sidecar.upstream.h1.body import Body
from sidecar.upstream.h1.deadlines import Sweeper
from sidecar.upstream.h1.errors import ConnectionLost, H1Error, MalformedResponse, ResponseTimeout
from sidecar.upstream.h1.framing import (
    MAX_FIELDS,
    MAX_HEAD_BYTES,
    Framing,
    body_framing,
    may_reuse,
)
from sidecar.upstream.h1.headers import Headers
from sidecar.upstream.h1.response import Response

# Phases of the call on a connection.
IDLE: Final = 0  # in the pool, or not yet used
HEAD: Final = 1  # request sent (or being sent), waiting for the answer's head
BODY: Final = 2  # head handed over, body arriving
DONE: Final = 3  # the whole answer arrived (it may not have been read yet)
FAILED: Final = 4  # the call failed; the connection is never reused
# A request body up to this size goes out in the head's write (one send instead of two).
JOIN_BODY_BELOW: Final = 64 * 1024
PARSE_ERRORS: Final = (httptools.HttpParserError, httptools.HttpParserUpgrade)


class Owner(Protocol):
    """The client a connection reports to."""

    sweeper: Sweeper[Connection]

    def finish(self, conn: Connection, reuse: bool) -> None: ...


class Connection(asyncio.Protocol):
    def __init__(self, owner: Owner, key: tuple[str, str, int], what: str) -> None:
        self.owner = owner
        self.key = key
        self.what = what  # "host:port" for messages
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.phase = IDLE
        self.keep_alive = True
        self.half_closed = False
        self.idle_since = 0.0
        self.deadline = math.inf
        self.idle_gap = 0.0
        self.framing = Framing.LENGTH
        self.body: Body | None = None
        self._head: asyncio.Future[Response] | None = None
        self._headers = Headers()
        self._te: list[str] | None = None
        self._cl: list[str] | None = None
        self._fields = 0
        self._head_bytes = 0
        self._field_bytes = 0
        self._interim = False

    # --- the call ----------------------------------------------------------------------------

    def send(
        self, head: bytes, body: bytes, deadline: float, idle_gap: float
    ) -> asyncio.Future[Response]:
        """Write a request; the future gets the answer once its head arrived."""
        transport = cast(asyncio.Transport, self.transport)
        if self.closed or transport.is_closing():  # closed by the provider as it connected
            raise ConnectionLost(f"{self.what} closed the connection before the request")
        self.phase = HEAD
        self._headers = Headers()
        self._te = self._cl = None
        self._fields = self._head_bytes = self._field_bytes = 0
        self._interim = False
        self.body = None
        self.deadline = deadline
        self.idle_gap = idle_gap
        self._head = future = self.loop.create_future()
        if len(body) < JOIN_BODY_BELOW:
            transport.write(head + body)
        else:
            transport.write(head)
            transport.write(body)
        return future

    def expire(self) -> None:
        what = "an answer" if self.phase == HEAD else "the rest of the answer"
        self.fail(ResponseTimeout(f"{self.what} sent no {what} in time"))

    def fail(self, exc: BaseException) -> None:
        """The call fails with ``exc`` (a finished answer stays whole); the connection closes."""
        self.keep_alive = False
        self.deadline = math.inf
        if self.phase == HEAD:
            self.phase = FAILED
            head, self._head = self._head, None
            if head is not None and not head.done():
                head.set_exception(exc)
        elif self.phase == BODY:
            self.phase = FAILED
            if self.body is not None:
                self.body.set_exception(exc)
        self._shut()

    def cut(self, exc: BaseException) -> None:
        """The sidecar's drain timeout ran out: a call waiting for its head fails with ``exc``,
        a body being read breaks with it; whoever holds the answer closes it."""
        self.keep_alive = False
        if self.phase == HEAD:
            self.fail(exc)
        elif self.body is not None:
            self.body.set_exception(exc)

    # --- the holder of the answer (Response) ---------------------------------------------------

    def release(self) -> None:
        body = self.body
        transport = self.transport
        reuse = (
            body is not None
            and transport is not None
            and not self.closed
            and may_reuse(
                complete=self.phase == DONE and body.at_eof(),
                keep_alive=self.keep_alive,
                framing=self.framing,
                half_closed=self.half_closed,
                unsent=transport.get_write_buffer_size(),
                failed=body.failed,
            )
        )
        self.owner.finish(self, reuse)

    def close(self) -> None:
        self.owner.finish(self, False)

    def half_close(self) -> bool:
        transport = self.transport
        if transport is None or transport.is_closing() or not transport.can_write_eof():
            return False
        try:
            transport.write_eof()
        except (OSError, RuntimeError):
            return False
        self.half_closed = True
        self.keep_alive = False
        return True

    def usable(self) -> bool:
        """Idle, open, and nothing arrived on it meanwhile (a pooled connection's check)."""
        transport = self.transport
        return (
            self.phase == IDLE
            and self.keep_alive
            and not self.closed
            and transport is not None
            and not transport.is_closing()
        )

    def reset_idle(self) -> None:
        """Back in the pool: no call, no deadline."""
        self.phase = IDLE
        self.body = None
        self.deadline = math.inf

    def shut(self) -> None:
        """Close the connection (the provider sees a FIN)."""
        self.keep_alive = False
        self._shut()

    def _shut(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    # --- flow control (Body) -------------------------------------------------------------------

    def pause(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()
            if self.idle_gap:
                self.deadline = math.inf  # the agent is slow, not the provider

    def resume(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
            if self.idle_gap and self.phase == BODY:
                self.deadline = self.loop.time() + self.idle_gap
                self.owner.sweeper.moved(self)

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase == BODY:
            if self.idle_gap:
                self.deadline = self.loop.time() + self.idle_gap
        elif phase == HEAD:
            self._head_bytes += len(data)
        else:
            # Bytes nobody asked for: after the answer, or on an idle pooled connection.
            self.keep_alive = False
            if phase != DONE:
                self._shut()
            return
        try:
            self.parser.feed_data(data)
        except PARSE_ERRORS as exc:
            self.fail(self._malformed(exc))
            return
        if self.phase == HEAD and self._head_bytes > MAX_HEAD_BYTES:
            self.fail(MalformedResponse(f"{self.what} sent a head over {MAX_HEAD_BYTES} bytes"))

    def _malformed(self, exc: BaseException) -> H1Error:
        inner = exc.__context__
        if isinstance(inner, H1Error):
            return inner  # raised by a callback below (too many fields)
        return MalformedResponse(f"{self.what} answered with malformed HTTP/1.1")

    def eof_received(self) -> bool | None:
        self.keep_alive = False
        self._ended(None)
        return None  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.keep_alive = False
        self._ended(exc)

    def _ended(self, exc: Exception | None) -> None:
        if self.phase == BODY and self.framing is Framing.UNTIL_CLOSE and exc is None:
            self._complete()  # the body was delimited by the connection's end
        elif self.phase in (HEAD, BODY):
            lost = ConnectionLost(
                f"{self.what} closed the connection before the answer was complete"
            )
            lost.__cause__ = exc
            self.fail(lost)

    def _complete(self) -> None:
        self.phase = DONE
        self.deadline = math.inf
        if self.body is not None:
            self.body.feed_eof()

    # --- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > MAX_FIELDS:
            raise MalformedResponse(f"{self.what} sent over {MAX_FIELDS} header fields")
        # A head that arrived in one read is not caught by data_received's count.
        self._field_bytes += len(name) + len(value)
        if self._field_bytes > MAX_HEAD_BYTES:
            raise MalformedResponse(f"{self.what} sent a head over {MAX_HEAD_BYTES} bytes")
        if self.phase != HEAD:
            return  # trailers, or a message nobody asked for: not the answer's fields
        text = value.decode("latin-1")
        low = self._headers.add(name.decode("latin-1"), text)
        if low == "content-length":
            self._cl = [*(self._cl or ()), text]
        elif low == "transfer-encoding":
            self._te = [*(self._te or ()), text]

    def on_headers_complete(self) -> None:
        if self.phase != HEAD:
            self.keep_alive = False  # a second answer to one request
            return
        status = self.parser.get_status_code()
        if status < 200:
            # Interim (100 Continue, 103 Early Hints): its fields are not the answer's.
            self._interim = True
            self._headers = Headers()
            self._te = self._cl = None
            return
        self.framing = body_framing(status, self._te or (), self._cl or ())
        body = self.body = Body(self)
        self.phase = BODY
        if self.idle_gap:
            self.deadline = self.loop.time() + self.idle_gap
            self.owner.sweeper.moved(self)
        head, self._head = self._head, None
        if head is not None and not head.done():
            head.set_result(Response(self, status, self._headers, body))

    def on_body(self, data: bytes) -> None:
        if self.phase == BODY and self.body is not None:
            self.body.feed(data)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if self.phase != BODY:
            return
        if not self.parser.should_keep_alive():
            self.keep_alive = False
        self._complete()
