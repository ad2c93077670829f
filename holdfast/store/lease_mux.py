"""Every lease keepalive of a process on one etcd ``LeaseKeepAlive`` stream per connection.

etcd's ``LeaseKeepAlive`` is a bidirectional stream that renews any number of leases: a request
names a lease, the answer names it back with its TTL (0: the lease is gone). Opening a stream
per keepalive, as a call per renewal would, costs a stream set-up and tear-down on both sides
for every renewal; a fleet renews a presence lease per sidecar every couple of seconds. As Go's
clientv3 does, the adapter keeps one stream per endpoint connection and matches answers to
waiting callers by lease id. A stream that breaks fails its waiting callers (who retry on a new
one); it stays open for the life of its connection otherwise.

Needs no aetcd import: ``holdfast.store.etcd`` passes the stream call and builds the requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import grpc

from holdfast.store.errors import StoreError, StoreUnavailable
from holdfast.store.grpc_errors import translate


class KeepAliveMux:
    def __init__(
        self,
        call: Any,
        *,
        index: int,
        token: str,
        request: Callable[[int], Any],
        on_broken: Callable[[int, str], None],
    ) -> None:
        self.call = call
        self.index = index
        self.token = token
        self._request = request
        self._on_broken = on_broken
        self._waiting: dict[int, list[asyncio.Future[int]]] = {}
        self._write = asyncio.Lock()
        self.failed: StoreError | None = None
        self._reader = asyncio.create_task(self._read(), name="etcd keepalive stream")

    @property
    def usable(self) -> bool:
        return self.failed is None

    async def keepalive(self, lease_id: int) -> int:
        """Renew ``lease_id`` once; its TTL in seconds, 0 if it no longer exists. Raises the
        stream's error if it breaks meanwhile (the caller bounds the wait)."""
        if self.failed is not None:
            raise self.failed
        answer: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(lease_id, []).append(answer)
        try:
            async with self._write:
                try:
                    await self.call.write(self._request(lease_id))
                except (grpc.RpcError, grpc.aio.UsageError, asyncio.InvalidStateError) as exc:
                    ended = StoreUnavailable(f"the keepalive stream ended ({exc!r})")
                    self._fail(ended)
                    raise ended from exc
            return await answer
        finally:
            waiting = self._waiting.get(lease_id)
            if waiting is not None and answer in waiting:
                waiting.remove(answer)
                if not waiting:
                    del self._waiting[lease_id]
            if not answer.done():
                answer.cancel()
            elif not answer.cancelled():
                answer.exception()  # failed while the write was still waiting: seen, not lost

    def close(self, reason: str = "the etcd store was closed") -> None:
        if self.failed is None:
            self._fail(StoreUnavailable(reason))
        if self._reader is not asyncio.current_task():
            self._reader.cancel()

    def _fail(self, error: StoreError) -> None:
        self.failed = error
        for waiting in self._waiting.values():
            for answer in waiting:
                if not answer.done():
                    answer.set_exception(error)
        self._waiting.clear()
        self.call.cancel()

    async def _read(self) -> None:
        while True:
            try:
                response = await self.call.read()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                self._fail(StoreUnavailable("the etcd store was closed"))
                return
            except (grpc.RpcError, grpc.aio.UsageError) as exc:
                self._fail(translate(exc, "keepalive stream broke"))
                self._on_broken(self.index, "keepalive stream broke")
                return
            if response is grpc.aio.EOF:
                self._fail(StoreUnavailable("etcd closed the keepalive stream"))
                return
            ttl = max(0, int(response.TTL))
            for answer in self._waiting.pop(int(response.ID), []):
                if not answer.done():
                    answer.set_result(ttl)
