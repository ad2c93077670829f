"""The overhead section of bench/RESULTS.md (``python -m bench.overhead``), and merging it into
the file: the run's machine, the summary of every relay, the guard's verdicts, per-phase tables
(bench/report_tables.py), method and conditions."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

from bench.cpu import FOREIGN
from bench.figures import Results, cpu_model, git_revision, package_version
from bench.report_tables import (
    baseline_section,
    first_turn_section,
    guard_section,
    lag_section,
    latency_section,
    memory_section,
    number,
    profile_section,
    streaming_section,
    summary_section,
    throughput_section,
)
from bench.sections import TITLE, markers
from bench.stack import BASELINE

START, END = markers("overhead")
OTHER_SECTION = re.compile(r"<!-- ([\w-]+):start -->.*?<!-- \1:end -->", re.DOTALL)


def _machine(res: Results) -> list[str]:
    c = res.cores
    pinning = (
        f"relays ({', '.join(res.relays)}) on core {c.proxy}; load generator, fake upstream, "
        f"etcd and configsvc on core {c.load} (`taskset`)"
        if c.proxy is not None
        else "none: fewer than two cores, every process shares the CPU"
    )
    peers = "; ".join(f"{name} {version}" for name, version in res.peers.items())
    return [
        f"- Date: {res.started_at} (whole run {res.wall_seconds:.0f} s)",
        f"- Machine: {os.cpu_count()} CPUs ({res.cores.usable} usable), {cpu_model()}, "
        f"Linux {platform.release()}",
        f"- Python {platform.python_version()}, aiohttp {package_version('aiohttp')}, "
        f"uvloop {package_version('uvloop')}; holdfast at {git_revision()}",
        f"- Peers: {peers or 'none in this run'}",
        f"- Pinning: {pinning}",
        f"- CPU speed reference (`bench.cpu.speed_reference`, lower is faster; the VM's speed "
        f"drifts with its host's load, so compare runs only alongside it): "
        f"{' before, '.join(number(v, 2) + ' µs' for v in res.speed_us)} after the phases",
    ]


def _method(res: Results) -> list[str]:
    p = res.plan
    return [
        "Paths to one `holdfast-fakellm`: **direct** (client → fake upstream), "
        "**bare relay** (client → `bench/bare_relay.py` → fake upstream: aiohttp + uvloop, "
        "pooled client session, body forwarded untouched, the floor of any Python relay), "
        "**sidecar** (client → `holdfast-sidecar` → fake upstream; configured through a real "
        "etcd by `holdfastctl release create`, `route set-stable` and `budget set`, so the "
        "config arrived by its watch; every request carries a pinned session, the agent has a "
        "token budget, metrics are on) and, when `bench/setup.sh --peers` installed them, the "
        "peers: **Portkey** (its AI gateway on Node, the provider and upstream named in "
        "request headers) and **LiteLLM** (its proxy, one worker, a generated config mapping "
        "the bench's models to the fake upstream, a master key). The client is "
        "`bench/loadgen.py`: raw HTTP/1.1 keep-alive connections on uvloop with pre-encoded "
        "requests, no client library in the hot loop.",
        "",
        "Every phase runs the paths in interleaved rounds (latency "
        f"{p.latency_rounds}, first turns {p.first_turn_rounds}, throughput "
        f"{p.throughput_rounds}, streaming {p.stream_rounds}), the order rotated each round; "
        "figures pool the rounds of one path, and every comparison is between paths measured "
        "in this same run. Relay CPU is the user + system time of the relay's process tree "
        "(`/proc/<pid>/stat` via psutil; children it reaped included) over its own rounds; "
        "core busy shares come from `/proc/stat`.",
        "",
        f"- Latency: open loop, {p.rate:g} req/s fired on schedule, {p.latency_seconds:g} s per "
        "path; a request's latency runs from writing it to its last byte.",
        f"- First turns: open loop, {p.first_turn_rate:g} req/s, {p.first_turn_seconds:g} s "
        "per path; a new session id on every request of the first-turn path. Run twice: the "
        f"fake provider answering at once, then after {p.provider_ms:g} ms.",
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


def disturbance(res: Results) -> list[str]:
    """Say so when other processes or the hypervisor took a noticeable share of the machine."""
    out = [
        f"{phase}: {n} rotation(s) of rounds discarded and run again because other processes "
        "or the hypervisor took more than the threshold during them."
        for phase, n in res.discarded.items()
    ]
    phases = (
        ("latency", res.latency),
        ("first turn", res.first_turns),
        ("first turn, slower provider", res.first_turns_slow),
        ("throughput", res.throughput),
        ("streaming", res.streaming),
    )
    for phase, runs in phases:
        if not runs:
            continue
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
        *summary_section(res),
        "",
        *guard_section(res),
        "",
        *latency_section(res),
        "",
        *first_turn_section(res),
        *([""] if res.first_turns else []),
        *throughput_section(res),
        "",
        *streaming_section(res),
        "",
        *lag_section(res),
        "",
        *memory_section(res),
        "",
        *baseline_section(res, BASELINE, res.baseline_revision),
        *([""] if res.baseline_revision else []),
        *profile_section(res),
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
