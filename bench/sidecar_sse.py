"""A relayed SSE stream in one process: instructions and CPU per event, sidecar vs bare relay.

``python -m bench.sidecar_sse [--baseline DIR] [--quick]``

The streaming twin of ``bench.sidecar_inprocess`` (same proxies, same harness): the fake upstream
answers each request with a chunked ``text/event-stream`` of EVENTS chat-completion chunks, one
event per write with a turn of the loop between writes (as a provider streams tokens), then the
usage chunk and ``[DONE]``; the raw client reads each stream to its end. A path's cost per event
is (its figure - the direct path's) / events per stream, so issue 20's "CPU per relayed SSE
event" can be judged by instruction counts, which a shared machine does not disturb.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from typing import Any, Final

import uvloop

from bench import callgrind as callgrind_tool
from bench import sidecar_inprocess as inproc
from bench.sections import markers, replace_section
from bench.stats import median

START, END = markers("sidecar-sse")
EVENTS: Final = 100  # token events per stream; the usage chunk and [DONE] come on top
PER_STREAM: Final = EVENTS + 2


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(payload: object) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


_BASE: Final = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "model": inproc.MODEL}
TOKEN: Final = _chunk(
    _event(_BASE | {"choices": [{"index": 0, "delta": {"content": "tok "}, "finish_reason": None}]})
)
TAIL: Final = (
    _chunk(
        _event(
            _BASE
            | {
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 12, "completion_tokens": EVENTS, "total_tokens": 112},
            }
        )
    )
    + _chunk(b"data: [DONE]\n\n")
    + b"0\r\n\r\n"
)
HEAD: Final = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


class FakeStreamer(inproc.FakeUpstream):
    """Answers every request with a stream of EVENTS token events, one write each."""

    def on_message_complete(self) -> None:
        asyncio.get_running_loop().create_task(self._stream())

    async def _stream(self) -> None:
        transport = self.transport
        assert transport is not None
        transport.write(HEAD)
        for _ in range(EVENTS):
            transport.write(TOKEN)
            await asyncio.sleep(0)  # the relay reads each event on its own
        transport.write(TAIL)


def stream_request(port: int, model: str) -> bytes:
    body = json.dumps(
        {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()
    head = (
        f"POST {inproc.CHAT} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\nAuthorization: Bearer agent-key\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def run(path: str, streams: int, warmup: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    fake_server = await loop.create_server(FakeStreamer, "127.0.0.1", 0)
    fake_port = fake_server.sockets[0].getsockname()[1]
    fake = f"http://127.0.0.1:{fake_port}"
    stop: inproc.Stop | None = None
    if path == "direct":
        port, model = fake_port, inproc.MODEL
    elif path == "bare":
        (port, stop), model = await inproc.serve_bare(fake), inproc.MODEL
    else:
        (port, stop), model = await inproc.serve_sidecar(fake), inproc.AGENT
    _, client = await loop.create_connection(
        lambda: inproc.RawClient(stream_request(port, model)), "127.0.0.1", port
    )
    for _ in range(warmup):
        await client.ask()
    size = await client.ask()  # a whole stream came through: every token event and the tail
    if size < EVENTS * (len(TOKEN) - 10):
        raise RuntimeError(f"{path}: a stream of {size} bytes is short")
    cpu = time.process_time()
    for _ in range(streams):
        await client.ask()
    cpu = time.process_time() - cpu
    assert client.transport is not None
    client.transport.close()
    if stop is not None:
        await stop()
    fake_server.close()
    return {"path": path, "requests": streams, "cpu_s": cpu}


def _cmd(path: str, streams: int, warmup: int) -> list[str]:
    child = "sidecar" if path == inproc.BASELINE else path
    return [
        sys.executable, "-m", "bench.sidecar_sse", "run", "--path", child,
        "--streams", str(streams), "--warmup", str(warmup),
    ]  # fmt: skip


def measure(
    paths: Sequence[str], counts: tuple[int, int], cpu_streams: int, rounds: int
) -> dict[str, tuple[float, float]]:
    """Per path: (instructions, CPU µs) per event, the whole process."""
    small, large = counts
    instructions: dict[str, float] = {}
    for path in paths:
        i1, _ = callgrind_tool.counted(_cmd(path, small, 5), inproc.child_env(path))
        i2, _ = callgrind_tool.counted(_cmd(path, large, 5), inproc.child_env(path))
        instructions[path] = (i2 - i1) / ((large - small) * PER_STREAM)
        print(f"  {path}: {instructions[path]:,.0f} instructions per event", file=sys.stderr)
    cpu: dict[str, list[float]] = {path: [] for path in paths}
    for _ in range(rounds):
        for path in paths:
            result = callgrind_tool.run(_cmd(path, cpu_streams, 10), inproc.child_env(path))
            cpu[path].append(result["cpu_s"] / (cpu_streams * PER_STREAM) * 1e6)
    return {p: (instructions[p], median(cpu[p])) for p in paths}


def render(
    figures: dict[str, tuple[float, float]], counts: tuple[int, int], cpu_streams: int, rounds: int
) -> str:
    direct_i, direct_c = figures["direct"]
    bare_i, bare_c = figures["bare"][0] - direct_i, figures["bare"][1] - direct_c
    names = {
        "bare": "bare relay (`bench/bare_relay.py`)",
        "sidecar": "sidecar (this checkout)",
        inproc.BASELINE: "sidecar, baseline checkout (before)",
    }
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        START,
        "## A relayed SSE stream in one process: sidecar vs bare relay, per event",
        "",
        f"`python -m bench.sidecar_sse`, {stamp}, on a shared 2-core VM (CPU figures are noisy; "
        f"instruction counts are not). As `bench.sidecar_inprocess`, but each answer is a chunked "
        f"stream of {EVENTS} token events written one at a time, then the usage chunk and "
        f"`[DONE]` ({PER_STREAM} events). The proxy's cost per event is the path's figure minus "
        f"the direct path's (client and fake alone: {direct_i:,.0f} instructions, "
        f"{direct_c:.1f} µs per event). Instructions: callgrind, runs of {counts[0]} and "
        f"{counts[1]} streams, the difference. CPU: process time over {cpu_streams} streams, "
        f"median of {rounds} interleaved rounds. The sidecar runs every filter, metrics and "
        "pinning; no budget configured.",
        "",
        "| proxy | instructions per event | vs bare relay | CPU µs per event | vs bare relay |",
        "|---|---|---|---|---|",
    ]
    for path, (i, c) in figures.items():
        if path == "direct":
            continue
        i, c = i - direct_i, c - direct_c
        lines.append(
            f"| {names[path]} | {i:,.0f} | {i / bare_i:.2f}x | {c:.1f} | {c / bare_c:.2f}x |"
        )
    lines.append(END)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.sidecar_sse", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    one = sub.add_parser("run", help="one path, one run (prints a RESULT line)")
    one.add_argument("--path", choices=inproc.PATHS, required=True)
    one.add_argument("--streams", type=int, default=50)
    one.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small counts, print only")
    parser.add_argument("--baseline", metavar="DIR", help="also the sidecar of this checkout")
    args = parser.parse_args(argv)
    if args.command == "run":
        callgrind_tool.emit(uvloop.run(run(args.path, args.streams, args.warmup)))
        return 0
    if not callgrind_tool.available():
        print("valgrind is needed (apt-get install valgrind)", file=sys.stderr)
        return 2
    paths = list(inproc.PATHS)
    if args.baseline:
        inproc.set_baseline(args.baseline)
        paths.append(inproc.BASELINE)
    counts, cpu_streams, rounds = ((5, 15), 20, 1) if args.quick else ((10, 40), 150, 5)
    section = render(measure(paths, counts, cpu_streams, rounds), counts, cpu_streams, rounds)
    print(section)
    if not args.quick:
        replace_section("sidecar-sse", section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
