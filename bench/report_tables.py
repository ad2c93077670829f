"""The tables of the overhead section of bench/RESULTS.md, from one run's ``Results``.

A table per phase (latency, throughput, streaming: each path's figures, then where the CPU went
during its rounds), memory, the sidecar's targets and the py-spy hot spots; and the Markdown
cells they are made of (``number``, ``signed``, ``percent``, ``table``). ``bench.report`` puts
them together with the run's conditions.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from bench.cpu import FOREIGN, LOADGEN, RELAY, UPSTREAM
from bench.figures import (
    BARE,
    DIRECT,
    SIDECAR,
    Results,
    bottleneck,
    capacity,
    chunks_of,
    cpu_us_per,
    events_of,
    latency_of,
    median_rate,
    paired_ratio,
    ttft_of,
    verdicts,
)
from bench.phases import PathRun
from bench.stats import ratio

NA = "-"


def number(value: float, digits: int = 2) -> str:
    return NA if value != value else f"{value:,.{digits}f}"


def signed(value: float, digits: int = 2) -> str:
    return NA if value != value else f"{value:+,.{digits}f}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def errors(run: PathRun) -> str:
    if not run.load.errors:
        return "0"
    return ", ".join(f"{kind} {n}" for kind, n in sorted(run.load.errors.items()))


def percent(value: float) -> str:
    return NA if value != value else f"{value:.0%}"


def cpu_shares(
    res: Results, runs: dict[str, PathRun], measure: str = "share of one core"
) -> list[str]:
    """Where the CPU went during each path's rounds (shares of one core), under a caption."""
    c = res.cores
    rows = []
    for p in res.paths:
        run = runs[p]
        rows.append([
            p, NA if p == DIRECT else percent(run.share(RELAY)), percent(run.share(LOADGEN)),
            percent(run.share(UPSTREAM)), percent(run.share(FOREIGN)),
            percent(run.core_share(c.proxy)), percent(run.stolen(c.proxy)),
            percent(run.core_share(c.load)), percent(run.stolen(c.load)),
        ])  # fmt: skip
    return ["", f"CPU during these rounds ({measure}):", "", *table(
        ["path", "relay", LOADGEN, UPSTREAM, FOREIGN, f"core {c.proxy} busy",
         f"core {c.proxy} stolen", f"core {c.load} busy", f"core {c.load} stolen"],
        rows,
    )]  # fmt: skip


def latency_section(res: Results) -> list[str]:
    lat = {p: latency_of(res.latency[p]) for p in res.paths}
    direct = lat[DIRECT]
    rows = []
    for p in res.paths:
        run, lt = res.latency[p], lat[p]
        rows.append([
            p, str(lt.n), number(run.load.rate, 0), number(lt.p50, 3), number(lt.p90, 3),
            number(lt.p99, 3), number(lt.max, 3),
            NA if p == DIRECT else signed(lt.p50 - direct.p50, 3),
            NA if p == DIRECT else signed(lt.p99 - direct.p99, 3),
            errors(run),
        ])  # fmt: skip
    header = ["path", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
              "added p50 ms", "added p99 ms", "errors"]  # fmt: skip
    side, bare = lat[SIDECAR], lat[BARE]
    return [
        f"### Non-streaming latency at {res.plan.rate:g} req/s (open loop)",
        "",
        *table(header, rows),
        "",
        f"Sidecar above the bare relay: p50 {signed(side.p50 - bare.p50, 3)} ms, "
        f"p99 {signed(side.p99 - bare.p99, 3)} ms. The bare relay's own added latency "
        f"(p50 {signed(bare.p50 - direct.p50, 3)} ms) is what two extra loopback hops and one "
        "aiohttp server + client cost on this machine.",
        *cpu_shares(res, res.latency),
    ]


def throughput_section(res: Results) -> list[str]:
    bare = res.throughput[BARE]
    c = res.cores
    rows = []
    for p in res.paths:
        run = res.throughput[p]
        rate, lt, relayed = median_rate(run), latency_of(run), p != DIRECT
        rows.append([
            p, number(rate, 0), " / ".join(number(r, 0) for r in run.round_rates),
            NA if not relayed else f"{number(100 * paired_ratio(run, bare), 0)} %",
            NA if not relayed else number(cpu_us_per(run, run.load.ok), 0),
            NA if not relayed else number(capacity(run), 0),
            number(lt.p50, 2), number(lt.p99, 2), errors(run),
            bottleneck(run, c, relayed=relayed),
        ])  # fmt: skip
    header = ["path", "req/s (median)", "per round", "vs bare relay (paired rounds)",
              "relay CPU µs/req", "req/s per relay CPU-second", "p50 ms", "p99 ms", "errors",
              "bottleneck"]  # fmt: skip
    return [
        f"### Throughput, closed loop, {res.plan.concurrency} connections",
        "",
        *table(header, rows),
        *cpu_shares(res, res.throughput, "share of one core; busy excludes stolen time"),
        "",
        "`direct` has the load generator and the fake upstream alone on their core: its rate is "
        "that core's ceiling. A relay's req/s is its own capacity only when its core is the "
        "saturated one; when the load core saturates first, the measured req/s is a lower "
        'bound and "req/s per relay CPU-second" (1 / relay CPU per request) estimates what '
        "one core of the relay would carry (its process CPU excludes the kernel's softirq work "
        "for its sockets, which the core busy share includes).",
    ]


def streaming_section(res: Results) -> list[str]:
    ttft = {p: ttft_of(res.streaming[p]) for p in res.paths}
    direct = ttft[DIRECT]
    rows = []
    for p in res.paths:
        run, t, relayed = res.streaming[p], ttft[p], p != DIRECT
        events, chunks = events_of(run), chunks_of(run)
        in_flight = ratio(sum(r.latency for r in run.load.replies), run.load.elapsed)
        rows.append([
            p, str(run.load.ok), number(in_flight, 1), number(latency_of(run).p50, 0),
            f"{events:,}", number(ratio(events, run.load.ok), 0), number(ratio(chunks, events), 2),
            number(t.p50, 2), number(t.p99, 2),
            NA if not relayed else signed(t.p50 - direct.p50, 2),
            NA if not relayed else signed(t.p99 - direct.p99, 2),
            NA if not relayed else number(cpu_us_per(run, events), 1),
            errors(run),
        ])  # fmt: skip
    header = ["path", "streams", "in flight (mean)", "stream ms p50", "SSE events",
              "events/stream", "HTTP chunks/event", "TTFT p50 ms", "TTFT p99 ms",
              "added TTFT p50 ms", "added TTFT p99 ms", "relay CPU µs/event", "errors"]  # fmt: skip
    return [
        f"### Streaming: {res.plan.stream_rate:g} streams/s of {res.plan.stream_tokens} tokens "
        "(open loop)",
        "",
        *table(header, rows),
        *cpu_shares(res, res.streaming),
        "",
        "HTTP chunks per event near 1.0 means the relay wrote each event as it came, so the "
        "CPU per event is not flattered by events coalesced into fewer writes.",
    ]


def memory_section(res: Results) -> list[str]:
    rows = [
        [
            p,
            number(res.rss_start_mb.get(p, math.nan), 1),
            number(res.rss_end_mb.get(p, math.nan), 1),
        ]
        for p in res.paths
        if p != DIRECT
    ]
    return ["### Memory (RSS, psutil)", "", *table(["process", "at start MB", "after runs MB"],
                                                    rows)]  # fmt: skip


def targets_section(res: Results) -> list[str]:
    rows = [
        [v.target.what + (f" ({v.how})" if v.how else ""), v.target.text,
         f"{number(v.value, 2)} {v.target.unit}",
         "met" if v.met else "**not met**"]
        for v in verdicts(res)
    ]  # fmt: skip
    return ["### Sidecar targets", "", *table(["target", "limit", "measured", "status"], rows)]


def profile_section(res: Results) -> list[str]:
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
            [f"`{h.frame}`", f"{h.share:.1%}", number(h.share * us, 0),
             ", ".join(f"`{name}` {share:.1%}" for name, share in h.callees)]
            for h in spots
        ]  # fmt: skip
        out += ["", f"**{path}** ({samples:,} samples, {number(us, 0)} µs CPU per request):", ""]
        out += table(["frame", "share", "≈ µs/request", "biggest callees"], rows)
    return out


def baseline_section(res: Results, baseline: str, revision: str) -> list[str]:
    """This build's sidecar against another build's, measured as paths of the same run."""
    if baseline not in res.paths:
        return []
    new, old = SIDECAR, baseline
    lat = {p: latency_of(res.latency[p]) for p in (BARE, new, old)}
    ttft = {p: ttft_of(res.streaming[p]) for p in (BARE, new, old)}
    tp, st = res.throughput, res.streaming

    def row(what: str, a: float, b: float, digits: int = 2) -> list[str]:
        return [what, number(a, digits), number(b, digits), number(ratio(a, b), 2)]

    rows = [
        row("relay CPU µs per request (throughput)", cpu_us_per(tp[new], tp[new].load.ok),
            cpu_us_per(tp[old], tp[old].load.ok), 0),
        row("req/s (median of rounds)", median_rate(tp[new]), median_rate(tp[old]), 0),
        row("added p50 above the bare relay, ms", lat[new].p50 - lat[BARE].p50,
            lat[old].p50 - lat[BARE].p50, 3),
        row("added p99 above the bare relay, ms", lat[new].p99 - lat[BARE].p99,
            lat[old].p99 - lat[BARE].p99, 3),
        row("TTFT p50, ms", ttft[new].p50, ttft[old].p50),
        row("TTFT p99, ms", ttft[new].p99, ttft[old].p99),
        row("relay CPU µs per SSE event", cpu_us_per(st[new], events_of(st[new])),
            cpu_us_per(st[old], events_of(st[old])), 1),
        row("RSS after the runs, MB", res.rss_end_mb.get(new, math.nan),
            res.rss_end_mb.get(old, math.nan), 1),
    ]  # fmt: skip
    return [
        f"### This build against the baseline ({revision})",
        "",
        f"`{new}` is this build, `{old}` the baseline's `holdfast-sidecar` (`--baseline`), "
        "both on the proxy core, fed the same config by the same etcd, in the same interleaved "
        "rounds: the ratio is this build over the baseline.",
        "",
        *table(["figure", "this build", "baseline", "ratio"], rows),
    ]
