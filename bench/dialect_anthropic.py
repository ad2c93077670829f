"""Anthropic Messages beside OpenAI chat completions through the sidecar, in one run.

Real processes, started the real way: etcd, configsvc, the fake upstream, and two sidecars --
agent ``bench-chat`` (an ``openai`` release) and agent ``bench-claude`` (an ``anthropic``
release; one agent speaks one provider's API) -- both pinned to the same core, the fake upstream
and this load generator to the other. Each round streams ``TOKENS``-token answers for
``ROUND_S`` seconds over ``CONCURRENCY`` keep-alive connections, on four paths in a rotating
order: each dialect directly to the fake upstream and through its sidecar. Per dialect:

* added latency, at a fixed ``RATE`` of streams a second (open loop, far from saturation): the
  sidecar's p50/p99 to the last byte and to the first byte, minus the direct path's, from
  rounds interleaved with it (slow drift lands on both alike);
* CPU per relayed SSE event, under closed-loop load (``CONCURRENCY`` connections): the sidecar
  process's CPU time during its rounds divided by the events it relayed (every event: text
  deltas and the frame events of each API alike).

``python -m bench.dialect_anthropic`` replaces its section of bench/RESULTS.md.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import uvloop

from bench.cpu import process_cpu
from bench.http1 import Target
from bench.loadgen import LoadResult, closed_loop, open_loop
from bench.sections import markers, publish
from bench.stack import Cores
from bench.stats import median, percentile
from holdfast_devtools import procs
from holdfast_devtools.etcd_local import EtcdNode

ENV: Final = "bench"
TOKENS: Final = 64
ROUNDS: Final = 6
ROUND_S: Final = 2.0
CONCURRENCY: Final = 8
RATE: Final = 40.0
START, END = markers("dialect-anthropic")
PROMPT: Final = "Where is my order 1234? It was due on Monday."


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    agent: str
    model: str
    provider: str
    path: str
    payload: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()


CHAT = Dialect(
    "chat completions", "bench-chat", "bench-chat-model", "openai", "/v1/chat/completions",
    {"messages": [{"role": "user", "content": PROMPT}], "stream": True,
     "stream_options": {"include_usage": True}},
)  # fmt: skip
MESSAGES = Dialect(
    "anthropic messages", "bench-claude", "bench-claude-model", "anthropic", "/v1/messages",
    {"messages": [{"role": "user", "content": PROMPT}], "stream": True, "max_tokens": 1024},
    (("anthropic-version", "2023-06-01"),),
)  # fmt: skip


@dataclass
class PathRun:
    latency: LoadResult = field(default_factory=LoadResult)  # open loop at RATE
    load: LoadResult = field(default_factory=LoadResult)  # closed loop: CPU per event
    cpu_s: float = 0.0


@dataclass
class Stack:
    fake: procs.ManagedProcess
    sidecars: dict[str, procs.ManagedProcess]


def _ctl(svc: procs.ManagedProcess, token: str, *args: str) -> None:
    subprocess.run(
        [procs.script("holdfastctl"), "--server", svc.url, *args],
        env={**os.environ, "HOLDFAST_TOKEN": token, "HOLDFAST_ACTOR": "bench"},
        check=True,
        capture_output=True,
        timeout=30,
    )


def _wait_stable(url: str, release: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/status", timeout=5) as resp:
                if (json.loads(resp.read()).get("route") or {}).get("stable") == release:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"sidecar at {url} never served {release}")


@contextmanager
def start(base: Path, cores: Cores) -> Iterator[Stack]:
    logs = base / "logs"
    token = secrets.token_urlsafe(16)
    with ExitStack() as stack:
        etcd = stack.enter_context(EtcdNode(base_dir=base / "etcd"))
        fake = procs.fakellm(logs, cpu=cores.load).start()
        stack.callback(fake.stop)
        for dialect in (CHAT, MESSAGES):
            body = json.dumps({"completion_tokens": TOKENS}).encode()
            request = urllib.request.Request(
                f"{fake.url}/_control/models/{dialect.model}", data=body, method="PUT"
            )
            with urllib.request.urlopen(request, timeout=5) as resp:
                resp.read()
        svc = procs.configsvc(logs, [etcd.client_url], ENV, token).start()
        stack.callback(svc.stop)
        sidecars = {}
        for dialect in (CHAT, MESSAGES):
            _ctl(
                svc, token, "release", "create", dialect.agent, "r1", "--model", dialect.model,
                "--base-url", f"{fake.url}/v1", "--provider", dialect.provider,
            )  # fmt: skip
            _ctl(svc, token, "route", "set-stable", dialect.agent, "r1")
            side = procs.sidecar(
                logs, dialect.agent, [etcd.client_url], ENV, base / f"state-{dialect.agent}",
                name=f"sidecar-{dialect.agent}", cpu=cores.proxy,
            ).start()  # fmt: skip
            stack.callback(side.stop)
            _wait_stable(side.url, "r1")
            sidecars[dialect.name] = side
        yield Stack(fake, sidecars)


def target(base_url: str, dialect: Dialect, model: str) -> Target:
    host_port = base_url.removeprefix("http://")
    host, port = host_port.split(":")
    body = json.dumps({"model": model, **dialect.payload}, separators=(",", ":")).encode()
    return Target(host, int(port), dialect.path, body, dialect.headers)


async def measure(stack: Stack) -> dict[tuple[str, str], PathRun]:
    paths: list[tuple[str, Dialect, Target, int | None]] = []
    for dialect in (CHAT, MESSAGES):
        side = stack.sidecars[dialect.name]
        assert side.proc is not None
        paths.append(("direct", dialect, target(stack.fake.url, dialect, dialect.model), None))
        paths.append(("sidecar", dialect, target(side.url, dialect, dialect.agent), side.proc.pid))
    for _, _, t, _ in paths:  # warm the pools and the code paths
        await closed_loop(t, CONCURRENCY, 0.5)
    runs: dict[tuple[str, str], PathRun] = {}
    for r in range(ROUNDS):
        order = paths[r % len(paths) :] + paths[: r % len(paths)]
        for where, dialect, t, pid in order:
            run = runs.setdefault((where, dialect.name), PathRun())
            run.latency.merge(await open_loop(t, RATE, ROUND_S))
            before = process_cpu(pid)
            run.load.merge(await closed_loop(t, CONCURRENCY, ROUND_S))
            run.cpu_s += process_cpu(pid) - before
    return runs


def render(runs: dict[tuple[str, str], PathRun], cores: Cores) -> str:
    rows = []
    for dialect in (CHAT, MESSAGES):
        direct, side = runs[("direct", dialect.name)], runs[("sidecar", dialect.name)]
        d_lat = [r.latency * 1000 for r in direct.latency.replies]
        s_lat = [r.latency * 1000 for r in side.latency.replies]
        d_ttfb = [r.ttfb * 1000 for r in direct.latency.replies]
        s_ttfb = [r.ttfb * 1000 for r in side.latency.replies]
        events = sum(r.events for r in side.load.replies)
        per_request = events / max(1, side.load.ok)
        cpu_us = side.cpu_s * 1e6 / max(1, events)
        rows.append(
            f"| {dialect.name} | {side.load.ok:,} | {per_request:.0f} | "
            f"{median(s_lat) - median(d_lat):+.2f} | "
            f"{percentile(s_lat, 99) - percentile(d_lat, 99):+.2f} | "
            f"{median(s_ttfb) - median(d_ttfb):+.2f} | {cpu_us:.1f} | "
            f"{side.cpu_s * 1e6 / max(1, side.load.ok):,.0f} | "
            f"{side.load.failed + direct.load.failed + side.latency.failed} |"
        )
    return "\n".join(
        [
            START,
            "## Dialects: Anthropic Messages beside chat completions",
            "",
            f"`python -m bench.dialect_anthropic`, {time.strftime('%Y-%m-%d %H:%M UTC')}: one "
            f"run on a **shared** machine ({cores.usable} CPUs; other sessions' tests ran "
            "beside it, so compare the two rows with each other, not with other sections). "
            f"Streamed answers of {TOKENS} tokens; {ROUNDS} rounds per path in rotating order, "
            f"each {ROUND_S:g} s at {RATE:g} streams/s (latency) then {ROUND_S:g} s over "
            f"{CONCURRENCY} connections back to back (CPU); one sidecar per dialect on the same "
            "core, the fake upstream and the load generator on the other. Added = through the "
            "sidecar minus directly to the fake upstream, from interleaved rounds.",
            "",
            f"| dialect | streams (CPU rounds) | events/stream | added p50 ms at {RATE:g}/s "
            "| added p99 ms | added first byte p50 ms | sidecar CPU µs/event "
            "| sidecar CPU µs/stream | errors |",
            "|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "A Messages stream has more events than a chat stream of the same tokens (message "
            "and block framing, a ping); per event the two cost about the same, each decoded "
            "once for every filter.",
            END,
        ]
    )


def main() -> int:
    cores = Cores.detect()
    cores.pin_self()
    with (
        tempfile.TemporaryDirectory(prefix="holdfast-bench-dialect-") as tmp,
        start(Path(tmp), cores) as stack,
    ):
        runs = uvloop.run(measure(stack))  # the load generator's loop, as bench.overhead
    return publish("dialect-anthropic", render(runs, cores))


if __name__ == "__main__":
    sys.exit(main())
