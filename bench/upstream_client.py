"""What one provider call costs the sidecar's client side, per HTTP client.

``python -m bench.upstream_client`` starts a small aiohttp server in a child process (a fixed
chat completion with Content-Length, keep-alive; and an SSE stream in chunked encoding, one
event per chunk, paced so that each chunk arrives on its own) and measures, for each client,
in a client process of its own:

- ``upstream``: the sidecar's ``Upstream.post`` + ``read_body`` (whatever client it uses now);
- ``aiohttp``: a bare ``aiohttp.ClientSession.post`` + ``read()`` (pooled, ``limit=0``);
- ``probe``: a minimal HTTP/1.1 client on asyncio (``loop.create_connection``, an
  ``asyncio.Protocol``, httptools' llhttp response parser), the floor for a Python client.

Two figures per client: instructions per call under ``valgrind --tool=callgrind`` (the
difference between two runs with different call counts, divided by the difference: start-up
and warm-up cancel out; deterministic up to the kernel's scheduling), and CPU µs per call
(process time over a longer run, median of interleaved rounds; noisy on a shared machine).
For streams, the same per relayed chunk (``iter_any``-style reading, nothing written).

``--quick`` runs small counts and only prints; otherwise the section of bench/RESULTS.md is
replaced. ``run`` and ``serve`` are the two halves, usable by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
import uvloop
from aiohttp import web

from bench import callgrind as callgrind_tool
from bench.sections import markers, replace_section
from bench.stats import median

START, END = markers("upstream-client")
CHAT_PATH: Final = "/v1/chat/completions"
STREAM_PATH: Final = "/v1/stream"
CLIENTS: Final = ("upstream", "aiohttp", "probe")
# ``--baseline DIR``: the sidecar's ``Upstream`` from another checkout (say, main before a change)
# as one more client of the same run, imported from DIR by the child process.
BASELINE: Final = "baseline"
BASELINE_ENV: Final = "HOLDFAST_BENCH_BASELINE"
KEY_VAR: Final = "BENCH_PROVIDER_KEY"
KEY: Final = "sk-bench-0123456789abcdef"
REQUEST: Final = json.dumps(
    {"model": "bench", "messages": [{"role": "user", "content": "Say hello in one word."}]}
).encode()
ANSWER: Final = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench",
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
EVENT: Final = (
    b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","model":"bench",'
    b'"choices":[{"index":0,"delta":{"content":"tok"}}]}\n\n'
)


# --- the server (its own process) ------------------------------------------------------------


async def _chat(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ANSWER, content_type="application/json")


async def _stream(request: web.Request) -> web.StreamResponse:
    await request.read()
    chunks = int(request.query.get("chunks", "10"))
    gap = float(request.query.get("gap_ms", "1")) / 1000
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    out.enable_chunked_encoding()
    await out.prepare(request)
    for _ in range(chunks):
        await asyncio.sleep(gap)
        await out.write(EVENT)
    await out.write_eof()
    return out


async def serve() -> None:
    app = web.Application()
    app.router.add_post(CHAT_PATH, _chat)
    app.router.add_post(STREAM_PATH, _stream)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(json.dumps({"port": runner.addresses[0][1]}), flush=True)
    await asyncio.Event().wait()


# --- the clients -----------------------------------------------------------------------------

Call = Callable[[], Awaitable[int]]  # one answer read to its end; returns body bytes (or chunks)


@dataclass(frozen=True, slots=True)
class Job:
    base: str  # http://127.0.0.1:PORT
    chunks: int  # 0: the chat completion; else a stream of that many chunks
    gap_ms: float

    @property
    def path(self) -> str:
        if not self.chunks:
            return CHAT_PATH
        return f"{STREAM_PATH}?chunks={self.chunks}&gap_ms={self.gap_ms:g}"


async def upstream_client(job: Job) -> tuple[Call, Callable[[], Awaitable[None]]]:
    if baseline := os.environ.get(BASELINE_ENV):
        sys.path.insert(0, baseline)  # before the first import of sidecar/holdfast
    from holdfast.keyspace import Release
    from sidecar.settings import SidecarSettings
    from sidecar.upstream import Upstream

    upstream = Upstream(SidecarSettings(agent="bench"), {KEY_VAR: KEY})
    await upstream.start()
    release = Release(
        agent="bench", name="bench", model="bench", base_url=job.base, api_key_env=KEY_VAR
    )
    ids = itertools.count()
    stream = bool(job.chunks)

    async def call() -> int:
        async with upstream.post(
            release, job.path, REQUEST, stream=stream, request_id=f"req-{next(ids)}"
        ) as response:
            if not stream:
                return len(await upstream.read_body(release, response))
            n = 0
            async for _chunk in response.content.iter_any():
                n += 1
            return n

    return call, upstream.close


async def aiohttp_client(job: Job) -> tuple[Call, Callable[[], Awaitable[None]]]:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)
    url = job.base + job.path
    ids = itertools.count()
    stream = bool(job.chunks)

    async def call() -> int:
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
            "Authorization": f"Bearer {KEY}",
            "X-Request-Id": f"req-{next(ids)}",
        }
        async with session.post(url, data=REQUEST, headers=headers) as response:
            if not stream:
                return len(await response.read())
            n = 0
            async for _chunk in response.content.iter_any():
                n += 1
            return n

    return call, session.close


async def probe_client(job: Job) -> tuple[Call, Callable[[], Awaitable[None]]]:
    from bench.upstream_probe import ProbePool

    pool = ProbePool(job.base, {"Authorization": f"Bearer {KEY}"})
    ids = itertools.count()
    stream = bool(job.chunks)

    async def call() -> int:
        response = await pool.post(job.path, REQUEST, stream=stream, request_id=f"req-{next(ids)}")
        if not stream:
            return len(await response.read())
        n = 0
        async for _chunk in response.iter_any():
            n += 1
        return n

    return call, pool.close


FACTORIES: Final = {
    "upstream": upstream_client,
    BASELINE: upstream_client,
    "aiohttp": aiohttp_client,
    "probe": probe_client,
}


async def run(client: str, job: Job, calls: int, warmup: int) -> dict[str, Any]:
    call, close = await FACTORIES[client](job)
    for _ in range(warmup):
        await call()
    cpu = time.process_time()
    units = 0
    for _ in range(calls):
        units += await call()
    cpu = time.process_time() - cpu
    await close()
    return {"client": client, "calls": calls, "units": units, "cpu_s": cpu}


# --- the harness -----------------------------------------------------------------------------


def _run_cmd(client: str, job: Job, calls: int, warmup: int) -> list[str]:
    return [
        sys.executable, "-m", "bench.upstream_client", "run", "--client", client,
        "--base", job.base, "--chunks", str(job.chunks), "--gap-ms", f"{job.gap_ms:g}",
        "--calls", str(calls), "--warmup", str(warmup),
    ]  # fmt: skip


def _env(client: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != BASELINE_ENV}
    if client == BASELINE:
        env[BASELINE_ENV] = _baseline_dir[0]
    return env


_baseline_dir: list[str] = [""]


def callgrind(client: str, job: Job, calls: int, warmup: int) -> tuple[int, int]:
    """(instructions of the whole client process, units it read) for one run."""
    instructions, result = callgrind_tool.counted(
        _run_cmd(client, job, calls, warmup), _env(client)
    )
    return instructions, int(result["units"])


def native(client: str, job: Job, calls: int, warmup: int) -> dict[str, Any]:
    return callgrind_tool.run(_run_cmd(client, job, calls, warmup), _env(client))


@dataclass(frozen=True, slots=True)
class Figure:
    client: str
    instructions: float  # per call (or per chunk)
    cpu_us: float  # per call (or per chunk), median of rounds


def measure(
    job: Job, clients: Sequence[str], counts: tuple[int, int], cpu_calls: int, rounds: int
) -> list[Figure]:
    small, large = counts
    instructions: dict[str, float] = {}
    for client in clients:
        i1, u1 = callgrind(client, job, small, 20)
        i2, u2 = callgrind(client, job, large, 20)
        # Streams: per chunk read (chunks that arrived together count once, as they cost).
        per = (u2 - u1) if job.chunks else (large - small)
        instructions[client] = (i2 - i1) / per
        print(f"  {client}: {instructions[client]:,.0f} instructions", file=sys.stderr)
    cpu: dict[str, list[float]] = {client: [] for client in clients}
    for _ in range(rounds):  # interleaved, so that a busy spell hits every client alike
        for client in clients:
            result = native(client, job, cpu_calls, 50)
            per = result["units"] if job.chunks else cpu_calls
            cpu[client].append(result["cpu_s"] / per * 1e6)
    return [Figure(c, instructions[c], median(cpu[c])) for c in clients]


def _reference(figures: Sequence[Figure]) -> Figure:
    """What the others are compared with: the baseline's Upstream when measured, else ours."""
    by = {f.client: f for f in figures}
    return by.get(BASELINE) or by.get("upstream") or figures[0]


def verdict(calls: Sequence[Figure]) -> str:
    """The decision rule of issue 20's brief: a client >= 30 % cheaper than aiohttp's is built."""
    by = {f.client: f for f in calls}
    ref = _reference(calls)
    parts = []
    for client, what in (("probe", "the minimal client"), ("upstream", "`Upstream` as it is now")):
        if client in by and by[client] is not ref:
            saved = 1 - by[client].instructions / ref.instructions
            parts.append(f"{what} needs {saved:.0%} fewer instructions per call")
    who = "the baseline's `Upstream`" if ref.client == BASELINE else "`Upstream`"
    return f"Against {who}: " + "; ".join(parts) + "." if parts else ""


def table(title: str, figures: Sequence[Figure], unit: str) -> list[str]:
    base = _reference(figures)
    lines = [
        f"| {title} | instructions per {unit} | vs {base.client} | CPU µs per {unit} |",
        "|---|---|---|---|",
    ]
    names = {
        BASELINE: "`Upstream.post` + `read_body`, baseline checkout (before)",
        "upstream": "`Upstream.post` + `read_body` (the sidecar's client)",
        "aiohttp": "bare `aiohttp.ClientSession.post` + `read()`",
        "probe": "minimal asyncio protocol + httptools (llhttp)",
    }
    for f in figures:
        ratio = f.instructions / base.instructions
        lines.append(
            f"| {names[f.client]} | {f.instructions:,.0f} | {ratio:.2f}x | {f.cpu_us:.1f} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.upstream_client", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="the server half (prints its port)")
    one = sub.add_parser("run", help="one client run (prints a JSON line)")
    one.add_argument("--client", choices=tuple(FACTORIES), required=True)
    one.add_argument("--base", required=True)
    one.add_argument("--chunks", type=int, default=0)
    one.add_argument("--gap-ms", type=float, default=1.0)
    one.add_argument("--calls", type=int, default=1000)
    one.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="small counts, print only")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument(
        "--baseline", metavar="DIR", help="also measure Upstream from this checkout (before/after)"
    )
    args = parser.parse_args(argv)
    if args.command == "serve":
        uvloop.run(serve())
        return 0
    if args.command == "run":
        job = Job(args.base, args.chunks, args.gap_ms)
        callgrind_tool.emit(uvloop.run(run(args.client, job, args.calls, args.warmup)))
        return 0
    if not callgrind_tool.available():
        print("valgrind is needed (apt-get install valgrind)", file=sys.stderr)
        return 2
    clients = args.clients.split(",")
    if args.baseline:
        _baseline_dir[0] = str(Path(args.baseline).resolve())
        clients.insert(0, BASELINE)
    return harness(args.quick, clients)


def harness(quick: bool, clients: Sequence[str]) -> int:
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.upstream_client", "serve"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert server.stdout is not None
        base = f"http://127.0.0.1:{json.loads(server.stdout.readline())['port']}"
        counts, cpu_calls, rounds = ((50, 150), 500, 1) if quick else ((100, 500), 5000, 5)
        print("non-streaming calls", file=sys.stderr)
        calls = measure(Job(base, 0, 0), clients, counts, cpu_calls, rounds)
        # Streams: 10 per run; 20 vs 60 chunks under callgrind, spaced widely enough that each
        # chunk arrives on its own even in a process slowed down ~50x.
        print("streams", file=sys.stderr)
        streams = 5 if quick else 10
        chunks = measure_stream(base, clients, streams, rounds)
    finally:
        server.terminate()
        server.wait()
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    section = "\n".join(
        [
            START,
            "## The provider call: the sidecar's HTTP client against the floor",
            "",
            f"`python -m bench.upstream_client`, {stamp}, on a shared 2-core VM (CPU figures "
            "are noisy; instruction counts are not). A local aiohttp server in another process "
            "answers a fixed chat completion (Content-Length, keep-alive) or an SSE stream "
            "(chunked, one event per chunk). Instructions: `valgrind --tool=callgrind` on the "
            f"client process, runs of {counts[0]} and {counts[1]} calls, the difference divided "
            f"by {counts[1] - counts[0]}. CPU: process time over {cpu_calls} calls, median of "
            f"{rounds} interleaved rounds.",
            "",
            *table("one call (request out, answer read)", calls, "call"),
            "",
            *table("one relayed SSE chunk (`iter_any`)", chunks, "chunk"),
            "",
            verdict(calls),
            END,
        ]
    )
    print(section)
    if not quick:
        replace_section("upstream-client", section)
    return 0


def measure_stream(base: str, clients: Sequence[str], streams: int, rounds: int) -> list[Figure]:
    instructions: dict[str, float] = {}
    for client in clients:
        small, large = Job(base, 20, 25), Job(base, 60, 25)
        i1, u1 = callgrind(client, small, streams, 2)
        i2, u2 = callgrind(client, large, streams, 2)
        instructions[client] = (i2 - i1) / (u2 - u1)
        expected = streams * (large.chunks - small.chunks)
        print(
            f"  {client}: {instructions[client]:,.0f} instructions per chunk "
            f"({u2 - u1} chunk reads for {expected} chunks sent)",
            file=sys.stderr,
        )
    cpu: dict[str, list[float]] = {client: [] for client in clients}
    for _ in range(rounds):
        for client in clients:
            result = native(client, Job(base, 100, 0.5), streams * 5, 2)
            cpu[client].append(result["cpu_s"] / result["units"] * 1e6)
    return [Figure(c, instructions[c], median(cpu[c])) for c in clients]


if __name__ == "__main__":
    sys.exit(main())
