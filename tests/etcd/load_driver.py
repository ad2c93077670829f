"""A steady load from a process of its own: ``python -m tests.etcd.load_driver URL SECONDS OUT``.

CONCURRENCY loops send non-streaming chat requests to one sidecar for SECONDS and write one
record per request (wall-clock start, latency in seconds, HTTP status or the exception's name)
to OUT as JSON, so a test can cut the run into phases around a fault it injected meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import aiohttp

CONCURRENCY = 4
BODY = {"model": "support", "messages": [{"role": "user", "content": "steady"}]}


async def loop(http: aiohttp.ClientSession, url: str, stop: float, out: list[list[object]]) -> None:
    while time.time() < stop:
        started, t0 = time.time(), time.perf_counter()
        try:
            async with http.post(f"{url}/v1/chat/completions", json=BODY) as resp:
                await resp.read()
                outcome: object = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcome = type(exc).__name__
        out.append([started, time.perf_counter() - t0, outcome])
        await asyncio.sleep(0.005)


async def run(url: str, seconds: float) -> list[list[object]]:
    records: list[list[object]] = []
    stop = time.time() + seconds
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        await asyncio.gather(*(loop(http, url, stop, records) for _ in range(CONCURRENCY)))
    return records


if __name__ == "__main__":
    Path(sys.argv[3]).write_text(json.dumps(asyncio.run(run(sys.argv[1], float(sys.argv[2])))))
