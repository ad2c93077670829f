"""The floor: the least a Python (aiohttp + uvloop) relay can do for a chat completion.

``python -m bench.bare_relay --upstream http://127.0.0.1:PORT [--listen 127.0.0.1:0]``

POST /v1/chat/completions is forwarded to the upstream as it came (body untouched, no JSON
parsing, no routing, no metrics, no logging per request) over one pooled ClientSession;
an SSE answer is relayed chunk by chunk as it arrives. ``GET /metrics`` has one histogram, the
event-loop lag sampled exactly as the sidecar samples its own (same timer, same buckets), so
the lag this machine and uvloop give any relay is measured beside the sidecar's. Whatever the
sidecar costs above this relay is the price of what it does; what this relay costs is the price
of Python and aiohttp.
Prints one JSON line ``{"event": "bare_relay_listening", "port": N}`` once it serves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from bisect import bisect_left
from collections.abc import Sequence
from typing import Final

import aiohttp
import uvloop
from aiohttp import web

PATH: Final = "/v1/chat/completions"
FORWARDED: Final = ("Content-Type", "Authorization", "Accept")
SESSION_KEY: Final = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM_KEY: Final = web.AppKey("upstream", str)
# The sidecar's (sidecar.ops.loop_lag; a test keeps the two equal). Not imported from there:
# this relay stays free of Holdfast's modules, so its memory is aiohttp's and uvloop's alone.
LAG_INTERVAL_S: Final = 0.05
LAG_BOUNDS: Final = (
    0.0005, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 5.0,
)  # fmt: skip
LAG_METRIC: Final = "holdfast_event_loop_lag_seconds"


class LoopLag:
    """How late the loop ran a timer that was due: counts per bucket, count and sum."""

    def __init__(self) -> None:
        self.buckets = [0] * (len(LAG_BOUNDS) + 1)  # the last one: over every bound
        self.count = 0
        self.total = 0.0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_INTERVAL_S
            await asyncio.sleep(LAG_INTERVAL_S)
            lag = round(max(0.0, loop.time() - due), 6)
            self.buckets[bisect_left(LAG_BOUNDS, lag)] += 1
            self.count += 1
            self.total += lag

    def exposition(self) -> str:
        lines = [f"# TYPE {LAG_METRIC} histogram"]
        cumulative = 0
        for bound, n in zip((*LAG_BOUNDS, None), self.buckets, strict=True):
            cumulative += n
            le = "+Inf" if bound is None else repr(bound)
            lines.append(f'{LAG_METRIC}_bucket{{le="{le}"}} {cumulative}')
        lines += [f"{LAG_METRIC}_count {self.count}", f"{LAG_METRIC}_sum {self.total!r}"]
        return "\n".join(lines) + "\n"


LAG_KEY: Final = web.AppKey("lag", LoopLag)


async def metrics(request: web.Request) -> web.StreamResponse:
    return web.Response(text=request.app[LAG_KEY].exposition(), content_type="text/plain")


async def relay(request: web.Request) -> web.StreamResponse:
    session = request.app[SESSION_KEY]
    body = await request.read()
    headers = {name: request.headers[name] for name in FORWARDED if name in request.headers}
    async with session.post(request.app[UPSTREAM_KEY] + PATH, data=body, headers=headers) as up:
        content_type = up.headers.get("Content-Type", "application/json")
        if not content_type.startswith("text/event-stream"):
            data = await up.read()
            return web.Response(status=up.status, body=data, headers={"Content-Type": content_type})
        out = web.StreamResponse(status=up.status, headers={"Content-Type": content_type})
        await out.prepare(request)
        async for chunk in up.content.iter_any():
            await out.write(chunk)
        await out.write_eof()
        return out


async def serve(upstream: str, host: str, port: int) -> None:
    app = web.Application()
    app[UPSTREAM_KEY] = upstream.rstrip("/")
    app[SESSION_KEY] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
    )
    app[LAG_KEY] = LoopLag()
    app.router.add_post(PATH, relay)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host=host, port=port)
    await site.start()
    bound = runner.addresses[0][1] if runner.addresses else port
    print(json.dumps({"event": "bare_relay_listening", "port": bound}), flush=True)
    sampler = asyncio.create_task(app[LAG_KEY].run())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    sampler.cancel()
    await runner.cleanup()
    await app[SESSION_KEY].close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.bare_relay", description=__doc__)
    parser.add_argument("--upstream", required=True, help="http://host:port of the upstream")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default %(default)s)")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    uvloop.run(serve(args.upstream, host or "127.0.0.1", int(port)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
