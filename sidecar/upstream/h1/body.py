"""A response body as it arrives: what the relay reads (``iter_any``, ``read``) and what the
sidecar's drain and hang-up paths poke at (``at_eof``, ``read_nowait``, ``set_exception``).

The semantics are aiohttp ``StreamReader``'s where the sidecar relies on them: a set exception
wins over buffered data, ``read_nowait`` refuses while a reader waits, and a reader cancelled
mid-wait loses nothing (the iterator is a plain object, not a generator a cancellation would
close). Reading pauses the socket while more than ``HIGH_WATER`` bytes sit unread, so a slow
agent cannot make the sidecar buffer a fast provider's whole stream.
"""

from __future__ import annotations

import asyncio
from typing import Final, Protocol

HIGH_WATER: Final = 256 * 1024


class FlowControl(Protocol):
    """The connection under a body: stop and restart reading from the socket."""

    def pause(self) -> None: ...
    def resume(self) -> None: ...


class Body:
    __slots__ = ("_buf", "_eof", "_exc", "_flow", "_loop", "_paused", "_size", "_waiter")

    def __init__(self, flow: FlowControl) -> None:
        self._buf: list[bytes] = []
        self._size = 0
        self._eof = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        # Taken at the first wait and kept: asyncio.get_running_loop() checks the process id
        # with a getpid system call each time, once per chunk of a stream otherwise.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flow = flow
        self._paused = False

    # --- fed by the connection ---------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self._buf.append(data)
        self._size += len(data)
        if self._waiter is not None:
            self._wake()
        if self._size > HIGH_WATER and not self._paused:
            self._paused = True
            self._flow.pause()

    def feed_eof(self) -> None:
        self._eof = True
        if self._waiter is not None:
            self._wake()

    def set_exception(self, exc: BaseException) -> None:
        """Every later read raises ``exc`` (buffered data or not)."""
        self._exc = exc
        if self._waiter is not None:
            self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- read by the relay -------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """The whole body arrived (it may not have been read yet)."""
        return self._eof

    @property
    def failed(self) -> bool:
        return self._exc is not None

    def at_eof(self) -> bool:
        """Read to its end: nothing buffered, nothing more to come."""
        return self._eof and not self._buf

    def _take(self) -> bytes:
        buf = self._buf
        data = buf[0] if len(buf) == 1 else b"".join(buf)
        buf.clear()
        self._size = 0
        if self._paused:
            self._paused = False
            self._flow.resume()
        return data

    def read_nowait(self) -> bytes:
        """Whatever is buffered, without waiting (b"" when nothing is)."""
        if self._exc is not None:
            raise self._exc
        if self._waiter is not None and not self._waiter.done():
            raise RuntimeError("read_nowait while a reader is waiting for the body")
        return self._take() if self._buf else b""

    async def readany(self) -> bytes:
        """The next data as it arrived (all that is buffered), b"" at the end."""
        while True:
            if self._exc is not None:
                raise self._exc
            if self._buf:
                return self._take()
            if self._eof:
                return b""
            await self._wait()

    async def read(self) -> bytes:
        """The whole (rest of the) body."""
        parts: list[bytes] = []
        while True:
            if self._exc is not None:
                raise self._exc
            if self._buf:
                parts.append(self._take())  # taking resumes a paused socket
            if self._eof:
                return parts[0] if len(parts) == 1 else b"".join(parts)
            await self._wait()

    async def _wait(self) -> None:
        if self._waiter is not None:
            raise RuntimeError("two readers of one response body")
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def iter_any(self) -> Chunks:
        return Chunks(self)


class Chunks:
    """``async for chunk in body.iter_any()``: each read's worth, until the end."""

    __slots__ = ("_body",)

    def __init__(self, body: Body) -> None:
        self._body = body

    def __aiter__(self) -> Chunks:
        return self

    async def __anext__(self) -> bytes:
        data = await self._body.readany()
        if not data:
            raise StopAsyncIteration
        return data
