"""The Markdown of the overhead section of bench/RESULTS.md, and merging it into the file."""

from __future__ import annotations

import math
import os
import platform
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from bench.cpu import FOREIGN, LOADGEN, RELAY, UPSTREAM
from bench.figures import (
    BARE,
    DIRECT,
    SIDECAR,
    Results,
    bottleneck,
    capacity,
    chunks_of,
    cpu_model,
    cpu_us_per,
    events_of,
    git_revision,
    latency_of,
    median_rate,
    package_version,
    paired_ratio,
    ttft_of,
    verdicts,
)
from bench.phases import PathRun
from bench.stats import ratio

NA = "-"
TITLE = "# Benchmark results"
START, END = "<!-- overhead:start -->", "<!-- overhead:end -->"
OTHER_SECTION = re.compile(r"<!-- ([\w-]+):start -->.*?<!-- \1:end -->", re.DOTALL)


def _f(value: float, digits: int = 2) -> str:
    return NA if value != value else f"{value:,.{digits}f}"


def _signed(value: float, digits: int = 2) -> str:
    return NA if value != value else f"{value:+,.{digits}f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def _errors(run: PathRun) -> str:
    if not run.load.errors:
        return "0"
    return ", ".join(f"{kind} {n}" for kind, n in sorted(run.load.errors.items()))


def _machine(res: Results) -> list[str]:
    c = res.cores
    pinning = (
        f"relays (sidecar, bare relay) on core {c.proxy}; load generator, fake upstream, etcd "
        f"and configsvc on core {c.load} (`taskset`)"
        if c.proxy is not None
        else "none: fewer than two cores, every process shares the CPU"
    )
    return [
        f"- Date: {res.started_at} (whole run {res.wall_seconds:.0f} s)",
        f"- Machine: {os.cpu_count()} CPUs ({res.cores.usable} usable), {cpu_model()}, "
        f"Linux {platform.release()}",
        f"- Python {platform.python_version()}, aiohttp {package_version('aiohttp')}, "
        f"uvloop {package_version('uvloop')}; holdfast at {git_revision()}",
        f"- Pinning: {pinning}",
        f"- CPU speed reference (`bench.cpu.speed_reference`, lower is faster; the VM's speed "
        f"drifts with its host's load, so compare runs only alongside it): "
        f"{' before, '.join(_f(v, 2) + ' µs' for v in res.speed_us)} after the phases",
    ]


def _method(res: Results) -> list[str]:
    p = res.plan
    return [
        "Three paths to one `holdfast-fakellm`: **direct** (client → fake upstream), "
        "**bare relay** (client → `bench/bare_relay.py` → fake upstream: aiohttp + uvloop, "
        "pooled client session, body forwarded untouched, the floor of any Python relay) and "
        "**sidecar** (client → `holdfast-sidecar` → fake upstream; configured through a real "
        "etcd by `holdfastctl release create` and `route set-stable`, so the config arrived by "
        "its watch). The client is `bench/loadgen.py`: raw HTTP/1.1 keep-alive connections "
        "on uvloop with pre-encoded requests, no client library in the hot loop.",
        "",
        "Every phase runs the paths in interleaved rounds (latency "
        f"{p.latency_rounds}, throughput {p.throughput_rounds}, streaming {p.stream_rounds}), "
        "the order rotated each round; figures pool the rounds of one path, and "
        "every comparison is between paths measured in this same run. Relay CPU is the "
        "process's user + system time (`/proc/<pid>/stat` via psutil) over its own rounds; "
        "core busy shares come from `/proc/stat`.",
        "",
        f"- Latency: open loop, {p.rate:g} req/s fired on schedule, {p.latency_seconds:g} s per "
        "path; a request's latency runs from writing it to its last byte.",
        f"- Throughput: closed loop, {p.concurrency} connections, {p.throughput_seconds:g} s "
        "per path; req/s is the median over rounds.",
        f"- Streaming: open loop, {p.stream_rate:g} streams started per second (staggered: a "
        "closed loop starts equal-length streams in lockstep bursts), "
        f"{p.stream_tokens} completion tokens each, {p.token_interval_ms:g} ms between the "
        f"fake upstream's chunks, {p.stream_seconds:g} s per path. TTFT runs from writing the "
        "request to the first body byte; CPU per event is the relay's CPU time over the SSE "
        "events the client counted (each `data:` line, usage chunk and `[DONE]` included).",
        f"- Warm-up of {p.warmup_seconds:g} s per path and shape first; nothing measured there.",
    ]


def _latency_section(res: Results) -> list[str]:
    lat = {p: latency_of(res.latency[p]) for p in res.paths}
    direct = lat[DIRECT]
    rows = []
    for p in res.paths:
        run, lt = res.latency[p], lat[p]
        rows.append([
            p, str(lt.n), _f(run.load.rate, 0), _f(lt.p50, 3), _f(lt.p90, 3), _f(lt.p99, 3),
            _f(lt.max, 3),
            NA if p == DIRECT else _signed(lt.p50 - direct.p50, 3),
            NA if p == DIRECT else _signed(lt.p99 - direct.p99, 3),
            _errors(run),
        ])  # fmt: skip
    out = [f"### Non-streaming latency at {res.plan.rate:g} req/s (open loop)", ""]
    out += _table(
        ["path", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
         "added p50 ms", "added p99 ms", "errors"],
        rows,
    )  # fmt: skip
    side, bare = lat[SIDECAR], lat[BARE]
    out += [
        "",
        f"Sidecar above the bare relay: p50 {_signed(side.p50 - bare.p50, 3)} ms, "
        f"p99 {_signed(side.p99 - bare.p99, 3)} ms. The bare relay's own added latency "
        f"(p50 {_signed(bare.p50 - direct.p50, 3)} ms) is what two extra loopback hops and one "
        "aiohttp server + client cost on this machine.",
    ]
    out += ["", "CPU during these rounds (share of one core):", ""]
    out += _cpu_table(res, res.latency)
    return out


def _pct(value: float) -> str:
    return NA if value != value else f"{value:.0%}"


def _cpu_table(res: Results, runs: dict[str, PathRun]) -> list[str]:
    """Where the CPU went during each path's rounds (shares of one core)."""
    c = res.cores
    rows = []
    for p in res.paths:
        run = runs[p]
        rows.append([
            p, NA if p == DIRECT else _pct(run.share(RELAY)), _pct(run.share(LOADGEN)),
            _pct(run.share(UPSTREAM)), _pct(run.share(FOREIGN)),
            _pct(run.core_share(c.proxy)), _pct(run.stolen(c.proxy)),
            _pct(run.core_share(c.load)), _pct(run.stolen(c.load)),
        ])  # fmt: skip
    return _table(
        ["path", "relay", LOADGEN, UPSTREAM, FOREIGN, f"core {c.proxy} busy",
         f"core {c.proxy} stolen", f"core {c.load} busy", f"core {c.load} stolen"],
        rows,
    )  # fmt: skip


def _throughput_section(res: Results) -> list[str]:
    bare = res.throughput[BARE]
    c = res.cores
    rows = []
    for p in res.paths:
        run = res.throughput[p]
        rate, lt, relayed = median_rate(run), latency_of(run), p != DIRECT
        rows.append([
            p, _f(rate, 0), " / ".join(_f(r, 0) for r in run.round_rates),
            NA if not relayed else f"{_f(100 * paired_ratio(run, bare), 0)} %",
            NA if not relayed else _f(cpu_us_per(run, run.load.ok), 0),
            NA if not relayed else _f(capacity(run), 0),
            _f(lt.p50, 2), _f(lt.p99, 2), _errors(run),
            bottleneck(run, c, relayed=relayed),
        ])  # fmt: skip
    out = [f"### Throughput, closed loop, {res.plan.concurrency} connections", ""]
    out += _table(
        ["path", "req/s (median)", "per round", "vs bare relay (paired rounds)", "relay CPU µs/req",
         "req/s per relay CPU-second", "p50 ms", "p99 ms", "errors", "bottleneck"],
        rows,
    )  # fmt: skip
    out += ["", "CPU during these rounds (share of one core; busy excludes stolen time):", ""]
    out += _cpu_table(res, res.throughput)
    out += [
        "",
        "`direct` has the load generator and the fake upstream alone on their core: its rate is "
        "that core's ceiling. A relay's req/s is its own capacity only when its core is the "
        "saturated one; when the load core saturates first, the measured req/s is a lower "
        'bound and "req/s per relay CPU-second" (1 / relay CPU per request) estimates what '
        "one core of the relay would carry (its process CPU excludes the kernel's softirq work "
        "for its sockets, which the core busy share includes).",
    ]
    return out


def _streaming_section(res: Results) -> list[str]:
    ttft = {p: ttft_of(res.streaming[p]) for p in res.paths}
    direct = ttft[DIRECT]
    rows = []
    for p in res.paths:
        run, t, relayed = res.streaming[p], ttft[p], p != DIRECT
        events, chunks = events_of(run), chunks_of(run)
        in_flight = ratio(sum(r.latency for r in run.load.replies), run.load.elapsed)
        rows.append([
            p, str(run.load.ok), _f(in_flight, 1), _f(latency_of(run).p50, 0), f"{events:,}",
            _f(ratio(events, run.load.ok), 0), _f(ratio(chunks, events), 2), _f(t.p50, 2),
            _f(t.p99, 2),
            NA if not relayed else _signed(t.p50 - direct.p50, 2),
            NA if not relayed else _signed(t.p99 - direct.p99, 2),
            NA if not relayed else _f(cpu_us_per(run, events), 1),
            _errors(run),
        ])  # fmt: skip
    out = [
        f"### Streaming: {res.plan.stream_rate:g} streams/s of {res.plan.stream_tokens} tokens "
        "(open loop)",
        "",
    ]
    out += _table(
        ["path", "streams", "in flight (mean)", "stream ms p50", "SSE events", "events/stream",
         "HTTP chunks/event", "TTFT p50 ms", "TTFT p99 ms", "added TTFT p50 ms",
         "added TTFT p99 ms", "relay CPU µs/event", "errors"],
        rows,
    )  # fmt: skip
    out += ["", "CPU during these rounds (share of one core):", ""]
    out += _cpu_table(res, res.streaming)
    out += [
        "",
        "HTTP chunks per event near 1.0 means the relay wrote each event as it came, so the "
        "CPU per event is not flattered by events coalesced into fewer writes.",
    ]
    return out


def _memory_section(res: Results) -> list[str]:
    rows = [
        [p, _f(res.rss_start_mb.get(p, math.nan), 1), _f(res.rss_end_mb.get(p, math.nan), 1)]
        for p in res.paths
        if p != DIRECT
    ]
    return ["### Memory (RSS, psutil)", "", *_table(["process", "at start MB", "after runs MB"],
                                                    rows)]  # fmt: skip


def _targets_section(res: Results) -> list[str]:
    rows = [
        [v.target.what + (f" ({v.how})" if v.how else ""), v.target.text,
         f"{_f(v.value, 2)} {v.target.unit}",
         "met" if v.met else "**not met**"]
        for v in verdicts(res)
    ]  # fmt: skip
    return ["### Sidecar targets", "", *_table(["target", "limit", "measured", "status"], rows)]


def _profile_section(res: Results) -> list[str]:
    if not res.profiles:
        return []
    out = [
        "### Where the relays' CPU goes (py-spy, `--profile`)",
        "",
        "Sampled after the measurements under the same closed-loop load. Each main-thread "
        "sample is charged to the deepest frame of our own code on its stack, so a frame's "
        "share includes the library calls it makes (`Upstream.post` is mostly aiohttp's "
        "client). µs/request = share x the relay CPU per request of the throughput phase.",
    ]
    for path, (samples, spots) in res.profiles.items():
        us = cpu_us_per(res.throughput[path], res.throughput[path].load.ok)
        rows = [
            [f"`{h.frame}`", f"{h.share:.1%}", _f(h.share * us, 0),
             ", ".join(f"`{name}` {share:.1%}" for name, share in h.callees)]
            for h in spots
        ]  # fmt: skip
        out += ["", f"**{path}** ({samples:,} samples, {_f(us, 0)} µs CPU per request):", ""]
        out += _table(["frame", "share", "≈ µs/request", "biggest callees"], rows)
    return out


def disturbance(res: Results) -> list[str]:
    """Say so when other processes or the hypervisor took a noticeable share of the machine."""
    out = [
        f"{phase}: {n} rotation(s) of rounds discarded and run again because other processes "
        "or the hypervisor took more than the threshold during them."
        for phase, n in res.discarded.items()
    ]
    phases = (
        ("latency", res.latency),
        ("throughput", res.throughput),
        ("streaming", res.streaming),
    )
    for phase, runs in phases:
        foreign = max(run.share(FOREIGN) for run in runs.values())
        steal = max(
            max(run.stolen(res.cores.proxy), run.stolen(res.cores.load))
            if res.cores.proxy is not None
            else 0.0
            for run in runs.values()
        )
        if foreign >= res.quiet_threshold:
            out.append(
                f"{phase}: other processes on the machine used up to {foreign:.0%} of a core "
                "during a path's rounds; its figures are disturbed."
            )
        if steal >= res.quiet_threshold:
            out.append(
                f"{phase}: the hypervisor stole up to {steal:.0%} of a pinned core's time; "
                "its figures are disturbed."
            )
    return out


def render(res: Results) -> str:
    """The overhead section of RESULTS.md, between its markers."""
    lines = [
        START,
        "## Sidecar overhead",
        "",
        "Written by `python -m bench.overhead` (`make bench`); see bench/README.md for what each "
        "figure means. These are reports, not pass/fail tests: the machine is noisy, so compare "
        "paths within this run rather than across runs.",
        "",
        *_machine(res),
        "",
        *_targets_section(res),
        "",
        *_latency_section(res),
        "",
        *_throughput_section(res),
        "",
        *_streaming_section(res),
        "",
        *_memory_section(res),
        "",
        *_profile_section(res),
        *([""] if res.profiles else []),
        "### Method",
        "",
        *_method(res),
    ]
    notes = [*res.notes, *disturbance(res)]
    lines += ["", "### Conditions of this run", "", *(f"- {n}" for n in notes), END]
    return "\n".join(lines)


def merge_into(existing: str | None, section: str) -> str:
    """RESULTS.md with ``section`` in place of the previous overhead section. Other tools
    (bench/watch_fanout.py) keep their own marked sections in the same file; those stay."""
    if existing and START in existing and END in existing:
        head, rest = existing.split(START, 1)
        return head + section + rest.split(END, 1)[1]
    others = [m.group(0) for m in OTHER_SECTION.finditer(existing or "")]
    return "\n\n".join([TITLE, section, *others]) + "\n"


def write_results(path: Path, res: Results) -> None:
    existing = path.read_text() if path.exists() else None
    path.write_text(merge_into(existing, render(res)))
