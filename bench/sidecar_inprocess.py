"""The whole proxied request in one process: instructions and CPU per request, sidecar vs the
bare relay.

``python -m bench.sidecar_inprocess [--baseline DIR] [--quick]``

Each measured child process holds everything of one path, on uvloop: a minimal fake upstream
(an asyncio protocol answering a fixed chat completion, keep-alive), the proxy under test
served on loopback, and a raw keep-alive HTTP/1.1 client sending one pre-encoded request at a
time (httptools parses the answers). Paths:

- ``direct``: client -> fake (what the client and the fake cost on their own);
- ``bare``: client -> ``bench.bare_relay``'s handler (aiohttp server + ``ClientSession``) -> fake;
- ``sidecar``: client -> the sidecar's HTTP app as ``Sidecar.build_app`` assembles it (every
  filter, metrics, pinning; no budget configured) -> fake;
- ``baseline`` (with ``--baseline DIR``): the sidecar from another checkout, say main before a
  change, imported from DIR.

A path's cost per request is its figure minus ``direct``'s. Instructions: callgrind on the child,
runs of two request counts, the difference divided by the difference in requests (start-up and
warm-up cancel out). CPU: process time over a longer run, median of interleaved rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import uvloop

from bench import callgrind as callgrind_tool
from bench.sections import markers, replace_section
from bench.stats import median

START, END = markers("sidecar-inprocess")
PATHS: Final = ("direct", "bare", "sidecar")
BASELINE: Final = "baseline"
BASELINE_ENV: Final = "HOLDFAST_BENCH_BASELINE"
AGENT: Final = "bench"
MODEL: Final = "bench-model"
CHAT: Final = "/v1/chat/completions"
ANSWER: Final = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello!"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14},
    }
).encode()
RESPONSE: Final = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Request-Id: up-1\r\n"
    b"Content-Length: %d\r\n\r\n" % len(ANSWER) + ANSWER
)


class FakeUpstream(asyncio.Protocol):
    """Answers every request with RESPONSE once its body arrived (httptools parses requests)."""

    def __init__(self) -> None:
        import httptools

        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        self.transport.write(RESPONSE)


class RawClient(asyncio.Protocol):
    """One keep-alive connection; ``ask`` sends the request and waits for the whole answer."""

    def __init__(self, request: bytes) -> None:
        import httptools

        self.parser = httptools.HttpResponseParser(self)
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[int] | None = None
        self.size = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.size += len(body)

    def on_message_complete(self) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(self.parser.get_status_code())

    async def ask(self) -> int:
        assert self.transport is not None
        self.size = 0
        self.done = asyncio.get_running_loop().create_future()
        self.transport.write(self.request)
        status = await self.done
        if status != 200:
            raise RuntimeError(f"HTTP {status}")
        return self.size


def request_bytes(port: int, model: str) -> bytes:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]}).encode()
    head = (
        f"POST {CHAT} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer agent-key\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


Stop = Callable[[], Awaitable[None]]


async def serve_bare(fake: str) -> tuple[int, Stop]:
    import aiohttp
    from aiohttp import web

    from bench.bare_relay import PATH, SESSION_KEY, UPSTREAM_KEY, relay

    app = web.Application()
    app[UPSTREAM_KEY] = fake
    app[SESSION_KEY] = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
    )
    app.router.add_post(PATH, relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()

    async def stop() -> None:
        await runner.cleanup()
        await app[SESSION_KEY].close()

    return runner.addresses[0][1], stop


async def serve_sidecar(fake: str) -> tuple[int, Stop]:
    if baseline := os.environ.get(BASELINE_ENV):
        sys.path.insert(0, baseline)  # before the first import of sidecar/holdfast
    from aiohttp import web

    from holdfast.keyspace import Keyspace, Release, Route
    from holdfast.logs import configure
    from holdfast.store import KeyValue
    from sidecar.config.kinds import CONFIG_KINDS
    from sidecar.config.state import ConfigState
    from sidecar.http.app import Parts, build_http_app
    from sidecar.ops.metrics import SidecarMetrics
    from sidecar.pins.pinning import Pinning
    from sidecar.pins.table import PinTable
    from sidecar.settings.model import SidecarSettings
    from sidecar.upstream.client import Upstream

    configure(level="info", service="sidecar")  # as the process runs: info, JSON to stderr
    ks = Keyspace("dev")
    settings = SidecarSettings(agent=AGENT)
    config = ConfigState(ks, AGENT, kinds=CONFIG_KINDS)
    release = Release(agent=AGENT, name="r1", model=MODEL, base_url=f"{fake}/v1")
    records = {
        ks.release(AGENT, "r1"): release.encode(),
        ks.route(AGENT): Route(agent=AGENT, stable="r1").encode(),
    }
    config.apply_reset(1, {k: KeyValue(k, v, 1, 1, 1) for k, v in records.items()}, "etcd")
    metrics = SidecarMetrics(AGENT)
    pinning = Pinning(AGENT, PinTable(ks, AGENT), metrics.pins, ttl=settings.pin_ttl)
    upstream = Upstream(settings, {})
    await upstream.start()

    @dataclass
    class Control:
        connected: bool = True
        last_contact: float = 0.0
        revision: int = 1
        resyncs: int = 0
        reconnects: int = 0

    app = build_http_app(
        Parts(
            settings=settings,
            config=config,
            upstream=upstream,
            metrics=metrics,
            control=Control(),
            etcd_endpoint=lambda: "-",
            pinning=pinning,
        )
    )
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()

    async def stop() -> None:
        await runner.cleanup()
        await upstream.close()

    return runner.addresses[0][1], stop


async def run(path: str, requests: int, warmup: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    fake_server = await loop.create_server(FakeUpstream, "127.0.0.1", 0)
    fake_port = fake_server.sockets[0].getsockname()[1]
    fake = f"http://127.0.0.1:{fake_port}"
    stop: Stop | None = None
    if path == "direct":
        port, model = fake_port, MODEL
    elif path == "bare":
        (port, stop), model = await serve_bare(fake), MODEL
    else:
        (port, stop), model = await serve_sidecar(fake), AGENT
    _, client = await loop.create_connection(
        lambda: RawClient(request_bytes(port, model)), "127.0.0.1", port
    )
    for _ in range(warmup):
        await client.ask()
    cpu = time.process_time()
    for _ in range(requests):
        await client.ask()
    cpu = time.process_time() - cpu
    assert client.transport is not None
    client.transport.close()
    if stop is not None:
        await stop()
    fake_server.close()
    return {"path": path, "requests": requests, "cpu_s": cpu}


# --- the harness -----------------------------------------------------------------------------

_baseline_dir: list[str] = [""]


def _cmd(path: str, requests: int, warmup: int) -> list[str]:
    child = "sidecar" if path == BASELINE else path
    return [
        sys.executable, "-m", "bench.sidecar_inprocess", "run", "--path", child,
        "--requests", str(requests), "--warmup", str(warmup),
    ]  # fmt: skip


def set_baseline(directory: str) -> None:
    """Measure the sidecar of the checkout at ``directory`` as the BASELINE path."""
    _baseline_dir[0] = str(Path(directory).resolve())


def child_env(path: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != BASELINE_ENV}
    if path == BASELINE:
        env[BASELINE_ENV] = _baseline_dir[0]
    return env


@dataclass(frozen=True, slots=True)
class Figure:
    path: str
    instructions: float  # per request, the whole process
    cpu_us: float  # per request, the whole process, median of rounds


def measure(
    paths: Sequence[str], counts: tuple[int, int], cpu_requests: int, rounds: int
) -> list[Figure]:
    small, large = counts
    instructions: dict[str, float] = {}
    for path in paths:
        i1, _ = callgrind_tool.counted(_cmd(path, small, 50), child_env(path))
        i2, _ = callgrind_tool.counted(_cmd(path, large, 50), child_env(path))
        instructions[path] = (i2 - i1) / (large - small)
        print(f"  {path}: {instructions[path]:,.0f} instructions per request", file=sys.stderr)
    cpu: dict[str, list[float]] = {path: [] for path in paths}
    for _ in range(rounds):
        for path in paths:
            result = callgrind_tool.run(_cmd(path, cpu_requests, 200), child_env(path))
            cpu[path].append(result["cpu_s"] / cpu_requests * 1e6)
    return [Figure(p, instructions[p], median(cpu[p])) for p in paths]


def render(
    figures: Sequence[Figure], counts: tuple[int, int], cpu_requests: int, rounds: int
) -> str:
    by = {f.path: f for f in figures}
    direct, bare = by["direct"], by["bare"]
    names = {
        "bare": "bare relay (`bench/bare_relay.py`: aiohttp server + `ClientSession`)",
        "sidecar": "sidecar (this checkout)",
        BASELINE: "sidecar, baseline checkout (before)",
    }
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        START,
        "## The whole proxied request in one process: sidecar vs bare relay",
        "",
        f"`python -m bench.sidecar_inprocess`, {stamp}, on a shared 2-core VM (CPU figures are "
        "noisy; instruction counts are not). One process per path holds a minimal fake upstream, "
        "the proxy and a raw keep-alive client (one request at a time, a fixed chat completion). "
        "The proxy's cost is the path's figure minus the direct path's (client and fake alone: "
        f"{direct.instructions:,.0f} instructions, {direct.cpu_us:.1f} µs per request). "
        f"Instructions: callgrind, runs of {counts[0]} and {counts[1]} requests, the difference "
        f"divided by {counts[1] - counts[0]}. CPU: process time over {cpu_requests} requests, "
        f"median of {rounds} interleaved rounds. The sidecar runs every filter, metrics and "
        "pinning, logs at info; no budget configured.",
        "",
        "| proxy | instructions per request | vs bare relay | CPU µs per request | vs bare relay |",
        "|---|---|---|---|---|",
    ]
    bare_i = bare.instructions - direct.instructions
    bare_c = bare.cpu_us - direct.cpu_us
    for f in figures:
        if f.path == "direct":
            continue
        i, c = f.instructions - direct.instructions, f.cpu_us - direct.cpu_us
        lines.append(
            f"| {names[f.path]} | {i:,.0f} | {i / bare_i:.2f}x | {c:.1f} | {c / bare_c:.2f}x |"
        )
    lines.append(END)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.sidecar_inprocess", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    one = sub.add_parser("run", help="one path, one run (prints a RESULT line)")
    one.add_argument("--path", choices=PATHS, required=True)
    one.add_argument("--requests", type=int, default=1000)
    one.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="small counts, print only")
    parser.add_argument("--baseline", metavar="DIR", help="also the sidecar of this checkout")
    args = parser.parse_args(argv)
    if args.command == "run":
        callgrind_tool.emit(uvloop.run(run(args.path, args.requests, args.warmup)))
        return 0
    if not callgrind_tool.available():
        print("valgrind is needed (apt-get install valgrind)", file=sys.stderr)
        return 2
    paths = list(PATHS)
    if args.baseline:
        set_baseline(args.baseline)
        paths.append(BASELINE)
    counts, cpu_requests, rounds = ((50, 150), 500, 1) if args.quick else ((100, 500), 3000, 5)
    section = render(measure(paths, counts, cpu_requests, rounds), counts, cpu_requests, rounds)
    print(section)
    if not args.quick:
        replace_section("sidecar-inprocess", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
