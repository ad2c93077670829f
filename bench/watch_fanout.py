"""Why one etcd watch per process: change-to-notification delay, one watch fanned out in-process
versus one etcd watch per listener, measured side by side against the same real etcd.

``python -m bench.watch_fanout`` prints a Markdown section and replaces the watch section of
bench/RESULTS.md (between its markers), leaving the rest of the file alone.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import AsyncGenerator
from typing import Final

import uvloop

from bench.sections import markers, publish
from holdfast.store.etcd import EtcdStore
from holdfast.store.mirror import MirrorUpdate, PrefixMirror
from holdfast.store.types import Change
from holdfast_devtools.etcd_local import EtcdNode

PREFIX: Final = "/bench/watch/"
WRITES: Final = 60
PACE_S: Final = 0.02
LISTENERS: Final = (1, 100, 1000)
START, END = markers("watch-fanout")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def write_series(store: EtcdStore, acked: dict[int, float]) -> None:
    for i in range(WRITES):
        # The write's own event can overtake its acknowledgement in this loop: time from sending.
        sent = time.perf_counter()
        revision = await store.put(f"{PREFIX}k{i % 5}", str(i).encode())
        acked[revision] = sent
        await asyncio.sleep(PACE_S)


async def fanned_out(store: EtcdStore, listeners: int) -> list[tuple[float, float]]:
    """One PrefixMirror, ``listeners`` in-process subscribers; (first, last) delay per write."""
    mirror = PrefixMirror(store, PREFIX)
    seen: dict[int, list[float]] = {}

    def listener(update: MirrorUpdate) -> None:
        if not update.reset:
            seen.setdefault(update.revision, []).append(time.perf_counter())

    for _ in range(listeners):
        mirror.subscribe(listener)
    await mirror.start()
    await mirror.wait_synced(10)
    await asyncio.sleep(0.2)
    acked: dict[int, float] = {}
    await write_series(store, acked)
    await asyncio.sleep(0.5)
    await mirror.close()
    return [(min(seen[r]) - t, max(seen[r]) - t) for r, t in acked.items() if r in seen]


async def separate_watches(store: EtcdStore, listeners: int) -> list[tuple[float, float]]:
    """``listeners`` etcd watches of their own, as if every component watched for itself."""
    start = await store.revision() + 1
    seen: dict[int, list[float]] = {}
    streams: list[AsyncGenerator[list[Change], None]] = []

    async def consume(stream: AsyncGenerator[list[Change], None]) -> None:
        async for batch in stream:
            seen.setdefault(batch[0].mod_revision, []).append(time.perf_counter())

    tasks = []
    for _ in range(listeners):
        stream = store.watch(PREFIX, start)
        streams.append(stream)
        tasks.append(asyncio.create_task(consume(stream)))
    await asyncio.sleep(1.0 + listeners / 500)  # let every stream be created
    acked: dict[int, float] = {}
    await write_series(store, acked)
    await asyncio.sleep(1.0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    complete = {r: t for r, t in acked.items() if len(seen.get(r, ())) == listeners}
    return [(min(seen[r]) - t, max(seen[r]) - t) for r, t in complete.items()]


def row(name: str, listeners: int, delays: list[tuple[float, float]]) -> str:
    first = [d[0] * 1000 for d in delays]
    last = [d[1] * 1000 for d in delays]
    if not delays:
        return f"| {name} | {listeners} | 0 | - | - | - | - |"
    return (
        f"| {name} | {listeners} | {len(delays)} | {statistics.median(first):.2f} | "
        f"{pct(first, 0.99):.2f} | {statistics.median(last):.2f} | {pct(last, 0.99):.2f} |"
    )


async def run() -> str:
    with EtcdNode("bench-watch") as node:
        store = EtcdStore([node.client_url])
        await store.connect()
        rows = []
        try:
            for n in LISTENERS:
                rows.append(row("one watch, fanned out in-process", n, await fanned_out(store, n)))
                rows.append(row("one etcd watch per listener", n, await separate_watches(store, n)))
        finally:
            await store.close()
    return "\n".join(
        [
            START,
            "## Config propagation inside one process: one watch fanned out vs a watch each",
            "",
            f"`python -m bench.watch_fanout`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}."
            f" {WRITES} writes {PACE_S * 1000:.0f} ms apart to a real single-node etcd; delay from"
            " sending the write to the first and to the last listener notified, in ms"
            " (all in one process and event loop, as in a sidecar).",
            "",
            "| design | listeners | writes seen | first p50 | first p99 | last p50 | last p99 |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            "The sidecar uses the first design (`holdfast.store.mirror.PrefixMirror`).",
            END,
        ]
    )


def main() -> int:
    return publish("watch-fanout", uvloop.run(run()))


if __name__ == "__main__":
    sys.exit(main())
