"""A lean load generator: asyncio protocols on uvloop, pre-encoded requests (bench/http1.py).

No client library sits in the hot loop: each keep-alive connection writes one pre-built request
and parses just enough of the answer to know when it ends, so the client costs a few
microseconds per request and the figures describe the servers.

Two shapes of load:

* ``open_loop``: requests fired at a fixed rate whatever the answers do (latency at a known
  load, no coordinated omission from waiting on slow answers);
* ``closed_loop``: N connections each sending its next request as soon as the last one ended
  (throughput).

Every reply carries its send, first-byte and last-byte times and its SSE event count, so the
same loops serve streaming (TTFT, events relayed).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.http1 import Connection, ProtocolError, Reply, Target


@dataclass(slots=True)
class LoadResult:
    """What one load run saw: every finished reply, failures by kind, the wall time."""

    replies: list[Reply] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0

    def fail(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def add(self, reply: Reply) -> None:
        if reply.status == 200:
            self.replies.append(reply)
        else:
            self.fail(f"http_{reply.status}")

    @property
    def ok(self) -> int:
        return len(self.replies)

    @property
    def failed(self) -> int:
        return sum(self.errors.values())

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    def merge(self, other: LoadResult) -> None:
        self.replies.extend(other.replies)
        for kind, count in other.errors.items():
            self.errors[kind] = self.errors.get(kind, 0) + count
        self.elapsed += other.elapsed


async def _exchange(conn: Connection, request: bytes, result: LoadResult) -> bool:
    """One request; False when the connection is no longer usable."""
    try:
        result.add(await conn.send(request))
    except (ConnectionError, OSError, ProtocolError, ValueError) as exc:
        result.fail(type(exc).__name__)
        conn.close()
        return False
    return not conn.closed


def fired(rate: float, duration: float) -> int:
    """How many requests ``open_loop`` sends at ``rate`` over ``duration``."""
    return round(rate * duration)


async def open_loop(
    target: Target,
    rate: float,
    duration: float,
    pool: int = 16,
    requests: Sequence[bytes] | None = None,
) -> LoadResult:
    """Fire ``rate`` requests per second for ``duration`` seconds, on as many connections as
    the answers need (``pool`` opened up front so that connecting is not measured).

    ``requests``: the pre-encoded requests to send in turn (e.g. each a new session), at least
    ``fired(rate, duration)`` of them; default ``target``'s one request every time."""
    total = fired(rate, duration)
    if requests is not None and len(requests) < total:
        raise ValueError(f"open_loop needs {total} requests, got {len(requests)}")
    sequence = requests if requests is not None else [target.encode()] * total
    idle = [await Connection.open(target.host, target.port) for _ in range(pool)]
    result = LoadResult()
    tasks: set[asyncio.Task[None]] = set()

    async def one(conn: Connection, request: bytes) -> None:
        if await _exchange(conn, request, result):
            idle.append(conn)

    interval = 1.0 / rate
    started = time.perf_counter()
    due = started
    for i in range(total):
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        conn = idle.pop() if idle else await Connection.open(target.host, target.port)
        task = asyncio.create_task(one(conn, sequence[i]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        due += interval
    if tasks:
        await asyncio.wait(set(tasks))
    result.elapsed = time.perf_counter() - started
    for conn in idle:
        conn.close()
    return result


async def closed_loop(target: Target, concurrency: int, duration: float) -> LoadResult:
    """``concurrency`` connections, each sending back to back until ``duration`` is up; the
    requests in flight at the deadline are finished and counted."""
    request = target.encode()
    conns = [await Connection.open(target.host, target.port) for _ in range(concurrency)]
    result = LoadResult()
    started = time.perf_counter()
    deadline = started + duration

    async def worker(conn: Connection) -> None:
        while time.perf_counter() < deadline:
            if not await _exchange(conn, request, result):
                try:
                    conn = await Connection.open(target.host, target.port)
                except OSError as exc:
                    result.fail(type(exc).__name__)
                    await asyncio.sleep(0.01)
        conn.close()

    await asyncio.gather(*(worker(c) for c in conns))
    result.elapsed = time.perf_counter() - started
    return result
