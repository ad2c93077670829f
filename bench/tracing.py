"""What OpenTelemetry tracing costs the request path: three real sidecar processes of one
agent, one with tracing off (the default), one exporting every span over OTLP/HTTP to a
collector in this process, one exporting a tenth of them (``OTEL_TRACES_SAMPLER=traceidratio``),
measured side by side in the same run.

Rounds take the sidecars in turn (the order rotates): latency p50 / p99 at a fixed open-loop
rate first, then a closed loop of CONNS connections for ROUND_S seconds, non-streaming and then
streaming; a pause between sidecars lets an exporter's backlog from the last burst drain. Every
request carries an agent's sampled ``traceparent``. Figures: the sidecar process's CPU per
request (its exporter thread included), requests per second, latency.
``python -m bench.tracing [--scale F]`` replaces its section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any, Final

import uvloop

from bench.cpu import process_cpu
from bench.http1 import Target
from bench.loadgen import LoadResult, closed_loop, open_loop
from bench.sections import markers, publish
from holdfast_devtools import procs
from holdfast_devtools.etcd_local import EtcdNode
from holdfast_devtools.otlp_sink import OtlpSink

START, END = markers("tracing")
AGENT: Final = "bench"
ENV: Final = "bench"
CONNS: Final = 16
ROUND_S: Final = 4.0
ROUNDS: Final = 6
RATE: Final = 100.0  # open loop, for latency
PAUSE_S: Final = 3.0
PROMPT: Final = [{"role": "user", "content": "Where is my order 1234? It was due on Monday."}]


@dataclass
class Path_:
    name: str
    proc: procs.ManagedProcess
    cpu_s: dict[str, float] = field(default_factory=dict)
    results: dict[str, LoadResult] = field(default_factory=dict)

    def add(self, phase: str, cpu: float, result: LoadResult) -> None:
        self.cpu_s[phase] = self.cpu_s.get(phase, 0.0) + cpu
        self.results.setdefault(phase, LoadResult()).merge(result)

    def cpu_us(self, phase: str) -> float:
        return self.cpu_s[phase] / max(self.results[phase].ok, 1) * 1e6


def target(proc: procs.ManagedProcess, *, stream: bool) -> Target:
    payload: dict[str, Any] = {"model": AGENT, "messages": PROMPT}
    if stream:
        payload |= {"stream": True, "stream_options": {"include_usage": True}}
    parent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    return Target.chat(proc.url, payload, {"traceparent": parent})


async def measure(scale: float) -> dict[str, Any]:
    sink = await OtlpSink().start()
    with TemporaryDirectory() as tmp, ExitStack() as stack:
        base = Path(tmp)
        etcd = stack.enter_context(EtcdNode(base_dir=base / "etcd"))
        logs = base / "logs"
        fake = procs.fakellm(logs).start()
        stack.callback(fake.stop)
        token = secrets.token_hex(16)  # never "-..." (an option to holdfastctl's parser)
        svc = procs.configsvc(logs, [etcd.client_url], ENV, token).start()
        stack.callback(svc.stop)
        ctl = [procs.script("holdfastctl"), "--server", svc.url, "--token", token]
        for args in (
            ["release", "create", AGENT, "fast", "--model", "bench-fast",
             "--base-url", f"{fake.url}/v1"],
            ["route", "set-stable", AGENT, "fast"],
        ):  # fmt: skip
            done = await (await asyncio.create_subprocess_exec(*ctl, *args)).wait()
            if done != 0:
                raise SystemExit(f"holdfastctl {' '.join(args[:2])} failed ({done})")
        paths = []
        on = ("--otlp-endpoint", sink.url)
        tenth = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}
        for name, extra, env in (("tracing off", (), {}), ("tracing on", on, {}),
                                 ("on, 10 % sampled", on, tenth)):  # fmt: skip
            slug = name.replace(" ", "-").replace(",", "").replace("%", "pct")
            proc = procs.sidecar(logs, AGENT, [etcd.client_url], ENV, base / slug, *extra,
                                 name=slug, extra_env=env).start()  # fmt: skip
            stack.callback(proc.stop)
            paths.append(Path_(name, proc))
        for p in paths:  # warm up, and wait for the route
            await closed_loop(target(p.proc, stream=False), 4, 2.0 * scale)
        for round_ in range(ROUNDS):
            order = paths[round_ % len(paths) :] + paths[: round_ % len(paths)]
            for p in order:
                assert p.proc.proc is not None
                pid = p.proc.proc.pid
                await asyncio.sleep(PAUSE_S)  # the last burst's spans exported
                timed = await open_loop(target(p.proc, stream=False), RATE, ROUND_S * scale)
                p.add("latency", 0.0, timed)
                for phase, stream in (("chat", False), ("stream", True)):
                    before = process_cpu(pid)
                    result = await closed_loop(target(p.proc, stream=stream), CONNS,
                                               ROUND_S * scale)  # fmt: skip
                    p.add(phase, process_cpu(pid) - before, result)
        spans = len(sink.spans)
    await sink.close()
    return {"paths": paths, "spans": spans}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def render(r: dict[str, Any], scale: float) -> str:
    off, on, tenth = r["paths"]
    lines = [
        START,
        "## Tracing: the request path with OpenTelemetry off and on",
        "",
        f"`python -m bench.tracing`, {time.strftime('%Y-%m-%d %H:%M UTC')}, on a shared "
        f"2-core machine (other sessions' tests were running; ratios of the two paths, "
        f"measured in the same rounds, are the figure to read). Two `holdfast-sidecar` "
        f"processes of one agent over real etcd and the fake upstream: one without tracing, two "
        f"with `--otlp-endpoint` to an OTLP/HTTP collector in the harness, one of them sampling "
        f"a tenth of the traces (`OTEL_TRACES_SAMPLER=traceidratio`, `_ARG=0.1`; "
        f"{r['spans']:,} spans received in all). {ROUNDS} rounds taking the three in turn: "
        f"latency at {RATE:g} req/s first, then closed loops of {CONNS} connections, "
        f"{ROUND_S * scale:g} s each; every request carries an agent's sampled `traceparent`.",
        "",
        "| figure | tracing off | tracing on | on / off | on, 10 % sampled | sampled / off |",
        "|---|---|---|---|---|---|",
    ]
    for phase, label in (("chat", "sidecar CPU per request"),
                         ("stream", "sidecar CPU per streamed request (12 chunks)")):  # fmt: skip
        a, b, c = off.cpu_us(phase), on.cpu_us(phase), tenth.cpu_us(phase)
        lines.append(f"| {label} | {a:,.0f} µs | {b:,.0f} µs | {b / a:.2f} | {c:,.0f} µs | "
                     f"{c / a:.2f} |")  # fmt: skip
    for phase, label in (("chat", "requests / s, closed loop"),
                         ("stream", "streams / s, closed loop")):  # fmt: skip
        a, b, c = off.results[phase].rate, on.results[phase].rate, tenth.results[phase].rate
        lines.append(f"| {label} | {a:,.0f} | {b:,.0f} | {b / a:.2f} | {c:,.0f} | {c / a:.2f} |")
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        a, b, c = (pct([x.latency for x in p.results["latency"].replies], q) * 1000
                   for p in (off, on, tenth))  # fmt: skip
        lines.append(f"| latency {label} at {RATE:g} req/s | {a:.2f} ms | {b:.2f} ms | "
                     f"{b / a:.2f} | {c:.2f} ms | {c / a:.2f} |")  # fmt: skip
    lines += [
        "",
        "Off is the default: the tracing filter is not in the chain, the tool proxy holds no "
        "tracer and the OpenTelemetry SDK is never imported (tests/unit/test_tracing_switch.py "
        "checks the last in a fresh interpreter that serves a request), so off costs what the "
        "sidecar cost before tracing existed. On, each request makes one span (a filter "
        "first in the chain) with the GenAI and Holdfast attributes and passes its context to "
        "the provider; the SDK's batch processor encodes and exports from its own thread, and "
        "that Python encoding is most of what a recorded span costs. A span the sampler drops "
        "costs little: no attributes kept, nothing exported.",
        END,
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracing")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every round's length")
    scale = parser.parse_args().scale
    return publish("tracing", render(uvloop.run(measure(scale)), scale))


if __name__ == "__main__":
    raise SystemExit(main())
