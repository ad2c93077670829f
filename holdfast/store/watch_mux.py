"""Many watches on one etcd Watch stream: each watch is a watch id of its own on it.

etcd's Watch RPC is a bidirectional stream that carries any number of watches; Go's clientv3
multiplexes every watch of a client onto one. ``WatchMux`` does the same for one endpoint
connection: a watch sends a create request with an id it chose, one reader task hands each
response to the watch it names, and a cancel request ends one watch without touching the others.
A stream that breaks ends every watch on it (each resumes on a new stream); the last watch to
leave closes the stream.

Needs no aetcd import: ``holdfast.store.etcd`` passes the stream call and builds the requests.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Callable
from typing import Any

import grpc

from holdfast.logs import get_logger
from holdfast.store.errors import StoreError, StoreUnavailable
from holdfast.store.grpc_errors import translate
from holdfast.store.types import Traffic

log = get_logger("holdfast.store.etcd")

EOF_ = grpc.aio.EOF


class Watcher:
    """One watch's end of the stream: its responses, in the order etcd sent them."""

    def __init__(self, mux: WatchMux, watch_id: int, what: str) -> None:
        self.mux = mux
        self.watch_id = watch_id
        self.what = what
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self.closed = False

    def deliver(self, item: Any) -> None:
        self._queue.put_nowait(item)

    async def next(self) -> Any:
        """The next response for this watch; raises the error that ended the stream."""
        item = await self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.mux.remove(self)


class WatchMux:
    """One Watch stream of one connection and the watches it carries."""

    def __init__(
        self,
        call: Any,
        *,
        index: int,
        token: str,
        cancel_request: Callable[[int], Any],
        traffic: Traffic,
        on_broken: Callable[[int, str], None],
    ) -> None:
        self.call = call
        self.index = index
        self.token = token  # the auth token the stream was opened with (etcd checks creates)
        self._cancel_request = cancel_request
        self._traffic = traffic
        self._on_broken = on_broken
        self._ids = itertools.count(1)
        self._watchers: dict[int, Watcher] = {}
        # Requests (creates, cancels) wait here for the one writer: a gRPC stream takes one
        # write at a time, and a thousand watches created at once must not each hold a lock
        # and a timer while they queue (a starved process timed them out and failed over).
        self._outbox: collections.deque[tuple[str, Any]] = collections.deque()
        self._ready = asyncio.Event()
        self.failed: StoreError | None = None
        self.retired = False  # no new watches: the stream's token went stale, or it failed
        self._reader = asyncio.create_task(self._read(), name="etcd watch stream")
        self._writer = asyncio.create_task(self._write_all(), name="etcd watch stream writer")

    @property
    def usable(self) -> bool:
        return self.failed is None and not self.retired

    @property
    def watches(self) -> int:
        return len(self._watchers)

    async def add(self, what: str, create: Callable[[int], Any]) -> Watcher:
        """Create a watch (``create(watch_id)`` builds the request) and return its Watcher at
        once: etcd's first answer (created, refused, or compacted) is its first response. No
        round trip nor write is awaited here, so a busy process never times out a watch etcd
        has already created; a stream that hangs is the liveness probe's to find, and one that
        ends fails every watch on it."""
        if self.failed is not None:
            raise self.failed
        watcher = Watcher(self, next(self._ids), what)
        self._watchers[watcher.watch_id] = watcher
        self._send(what, create(watcher.watch_id))
        return watcher

    def remove(self, watcher: Watcher) -> None:
        if self._watchers.pop(watcher.watch_id, None) is None:
            return
        if not self._watchers:
            # The last watch left: end the stream (etcd drops its watchers with it).
            self._close()
            return
        if self.failed is None:  # tell etcd, in the background: a close must not wait on it
            self._send(watcher.what, self._cancel_request(watcher.watch_id))

    def _send(self, what: str, request: Any) -> None:
        self._outbox.append((what, request))
        self._ready.set()

    async def _write_all(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._outbox:
                what, request = self._outbox.popleft()
                try:
                    await self.call.write(request)
                except (grpc.RpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
                    # The stream ended before its reader noticed: no watch can join it.
                    self._fail(StoreUnavailable(f"{what}: the watch stream ended ({exc!r})"))
                    return

    def retire(self) -> None:
        """Take no new watches; the stream ends once its last watch has left."""
        self.retired = True
        if not self._watchers:
            self._close()

    def close(self, reason: str = "the etcd store was closed") -> None:
        """End the stream now; every watch on it ends with StoreUnavailable."""
        if self.failed is None:
            self._fail(StoreUnavailable(reason))
        self._close()

    def _close(self) -> None:
        self.retired = True
        if self.failed is None:
            self.failed = StoreUnavailable("the watch stream was closed")
        self.call.cancel()
        for task in (self._reader, self._writer):
            if task is not asyncio.current_task():
                task.cancel()
        self._outbox.clear()

    def _fail(self, error: StoreError) -> None:
        self.failed = error
        self.retired = True
        for watcher in tuple(self._watchers.values()):
            watcher.deliver(error)
        self._watchers.clear()
        self._outbox.clear()
        if self._writer is not asyncio.current_task():
            self._writer.cancel()
        self.call.cancel()

    async def _read(self) -> None:
        try:
            while True:
                try:
                    response = await self.call.read()
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
                    # Not ours: grpc cancels the calls of a channel that close() shut.
                    self._fail(StoreUnavailable("the etcd store was closed"))
                    return
                except (grpc.RpcError, grpc.aio.UsageError) as exc:
                    self._fail(translate(exc, "watch stream broke"))
                    self._on_broken(self.index, "watch stream broke")
                    return
                if response is EOF_:
                    self._fail(StoreUnavailable("etcd closed the watch stream"))
                    return
                self._count(response)
                watcher = self._watchers.get(int(response.watch_id))
                if watcher is not None:  # else: a watch that left, its cancel not yet applied
                    watcher.deliver(response)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must end the watches, never hang them
            log.exception("watch_stream_reader_failed")
            self._fail(StoreUnavailable(f"watch stream reader failed: {exc!r}"))

    def _count(self, response: Any) -> None:
        self._traffic.response(response.ByteSize())
        for event in response.events:
            kv = event.kv
            self._traffic.key(kv.key.decode("utf-8", "surrogateescape"), len(kv.value))
