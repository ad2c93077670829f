"""The tables of the overhead section of bench/RESULTS.md, from one run's ``Results``.

The summary (every relay, peers included, one column each, as issue 20 lays it out), the
guard's verdicts, a table per phase (latency, first turns, throughput, streaming: each path's
figures, then where the CPU went during its rounds), the sidecar's event-loop lag, memory and
the py-spy hot spots; and the Markdown cells they are made of (``number``, ``signed``,
``percent``, ``table``). ``bench.report`` puts them together with the run's conditions.
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
    first_turn_p50s,
    held,
    lag_ms,
    latency_of,
    median_rate,
    paired_ratio,
    ttft_of,
    verdicts,
)
from bench.looplag import LAG_METRIC
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
    for p, run in runs.items():
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
        *_backlog(res, res.latency, res.plan.rate, "req/s"),
        *cpu_shares(res, res.latency),
    ]


def _backlog(res: Results, runs: dict[str, PathRun], rate: float, unit: str) -> list[str]:
    """A sentence naming the paths that could not keep up with an open loop's rate."""
    behind = [
        f"{p} ({number(runs[p].load.rate, 1)} {unit} answered, direct "
        f"{number(runs[DIRECT].load.rate, 1)})"
        for p in res.relays
        if not held(runs[p], runs[DIRECT])
    ]
    if not behind:
        return []
    return [
        "",
        f"Could not hold {rate:g} {unit}: {', '.join(behind)}. Its requests queued behind each "
        "other, so its latencies measure that backlog more than the relay.",
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
        *_backlog(res, res.streaming, res.plan.stream_rate, "streams/s"),
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


def guard_section(res: Results) -> list[str]:
    """Issue 20's targets for the sidecar, judged against the bare relay of this run; the same
    verdicts decide ``--guard``'s exit status."""
    rows = [
        [v.target.what + (f" ({v.how})" if v.how else ""), v.target.text,
         v.target.shown(v.value) + (f" ({v.detail})" if v.detail else ""),
         {"met": "met", "NOT MET": "**not met**"}.get(v.status, f"skipped: {v.skipped}")]
        for v in verdicts(res)
    ]  # fmt: skip
    return [
        "### Sidecar targets (the regression guard)",
        "",
        "Issue 20's targets, relative to the bare relay measured in this run where they say "
        "so. `python -m bench.overhead --guard` exits non-zero when one is not met; a skipped "
        "one (nothing to judge it by) does not fail it.",
        "",
        *table(["target", "limit", "measured", "status"], rows),
    ]


def summary_section(res: Results) -> list[str]:
    """Every relay side by side (peers included), the figures issue 20 compares them by."""
    paths = res.relays
    p, lat, st, tp = res.plan, res.latency, res.streaming, res.throughput
    direct_lat, direct_ttft = latency_of(lat[DIRECT]), ttft_of(st[DIRECT])

    def behind(runs: dict[str, PathRun], path: str) -> str:
        return "" if held(runs[path], runs[DIRECT]) else " (cannot hold it: a backlog)"

    def latency(path: str) -> str:
        lt = latency_of(lat[path])
        added = f"{number(lt.p50 - direct_lat.p50)} / {number(lt.p99 - direct_lat.p99)} ms"
        return added + behind(lat, path)

    def ttft(path: str) -> str:
        t = ttft_of(st[path])
        return f"{number(t.p50 - direct_ttft.p50)} / {number(t.p99)} ms" + behind(st, path)

    def first_turn(path: str, slow: bool = False) -> str:
        first, later, direct = first_turn_p50s(res, path, slow=slow)
        if first != first:
            return NA
        return f"{number(first - direct)} ms (later turn {number(later - direct)} ms)"

    def lag(path: str) -> str:
        if lat[path].lag is None and st[path].lag is None:
            return NA
        return f"{number(lag_ms(lat[path], 0.99))} / {number(lag_ms(st[path], 0.99))} ms"

    rows = [
        [f"relay CPU per request ({p.concurrency} connections)",
         *(f"{number(cpu_us_per(tp[x], tp[x].load.ok), 0)} µs" for x in paths)],
        ["throughput on one core (median of rounds)",
         *(f"{number(median_rate(tp[x]), 0)} req/s" for x in paths)],
        [f"added latency at {p.rate:g} req/s, p50 / p99", *(latency(x) for x in paths)],
        [f"added TTFT at {p.stream_rate:g} streams/s, p50 / TTFT p99",
         *(ttft(x) for x in paths)],
        ["relay CPU per relayed SSE event",
         *(f"{number(cpu_us_per(st[x], events_of(st[x])), 1)} µs" for x in paths)],
        ["a session's first turn (its pin claimed in etcd), added p50",
         *(first_turn(x) for x in paths)],
        *([[f"the same, the provider answering in {p.provider_ms:g} ms",
            *(first_turn(x, True) for x in paths)]] if res.first_turns_slow else []),
        [f"event-loop lag p99 at {p.rate:g} req/s / {p.stream_rate:g} streams/s",
         *(lag(x) for x in paths)],
        ["RSS after the run", *(f"{number(res.rss_end_mb.get(x, math.nan), 0)} MB"
                                for x in paths)],
    ]  # fmt: skip
    versions = "; ".join(f"{name} {version}" for name, version in res.peers.items())
    return [
        "### Summary: every relay in this run",
        "",
        "All measured side by side in the interleaved rounds below, on the same fake upstream, "
        "load generator and proxy core. Added latency and TTFT are above `direct`."
        + (f" Peers: {versions}." if versions else ""),
        "",
        *table(["figure", *paths], rows),
    ]


def first_turn_section(res: Results) -> list[str]:
    """The first-turn phases: a new session's first turn against a pinned session's later
    turn, with the provider answering at once and answering after ``plan.provider_ms``."""
    if not res.first_turns:
        return []
    p = res.plan
    out = [
        f"### A session's first turn against its later turns ({p.first_turn_rate:g} req/s, "
        "open loop)",
        "",
        "Through the sidecar: on the *first turns* path every request carries a session id "
        "never used before (the sidecar claims its pin in etcd, create-if-absent, beside the "
        "provider call, and answers once etcd has settled it); on the *later turns* path every "
        "request carries one session pinned in the warm-up. `direct` gives the added figures "
        "their zero. First with the fake provider answering at once, where the etcd write is "
        f"the whole of the difference; then with the provider answering after {p.provider_ms:g} "
        "ms, where the claim has the provider's time to settle in.",
    ]
    phases = [("answering at once", res.first_turns, False)]
    if res.first_turns_slow:
        phases.append((f"answering after {p.provider_ms:g} ms", res.first_turns_slow, True))
    header = ["path", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "added p50 ms",
              "added p99 ms", "errors"]  # fmt: skip
    for what, runs, slow in phases:
        direct = latency_of(runs[DIRECT])
        rows = []
        for path, run in runs.items():
            lt = latency_of(run)
            rows.append([
                path, str(lt.n), number(run.load.rate, 0), number(lt.p50, 3),
                number(lt.p90, 3), number(lt.p99, 3),
                NA if path == DIRECT else signed(lt.p50 - direct.p50, 3),
                NA if path == DIRECT else signed(lt.p99 - direct.p99, 3), errors(run),
            ])  # fmt: skip
        first, later, _ = first_turn_p50s(res, slow=slow)
        out += [
            "",
            f"The provider {what}:",
            "",
            *table(header, rows),
            "",
            f"First turn p50 above the later turn's: {signed(first - later, 3)} ms.",
            *cpu_shares(res, runs),
        ]
    return out


def lag_section(res: Results) -> list[str]:
    """The event-loop lag each relay's histogram recorded during its rounds (the sidecars', and
    the bare relay's: the same sampler, so what the machine and uvloop give any relay)."""
    phases = (
        (f"latency, {res.plan.rate:g} req/s", res.latency),
        (f"streaming, {res.plan.stream_rate:g} streams/s", res.streaming),
        (f"throughput, {res.plan.concurrency} connections", res.throughput),
    )
    rows = []
    for path in res.relays:
        for phase, runs in phases:
            lag = runs[path].lag
            if lag is None:
                continue
            rows.append([
                path, phase, f"{lag.count:,.0f}", number(lag.mean * 1000, 3),
                number(lag.quantile(0.5) * 1000, 3), number(lag.quantile(0.99) * 1000, 3),
                number(lag.worst_bound * 1000, 1),
            ])  # fmt: skip
    head = ["### Event-loop lag of the sidecar (and of the bare relay)", ""]
    if not rows:
        return [
            *head,
            f"Not measured: no sidecar in this run exports `{LAG_METRIC}` on `/metrics`.",
        ]
    return [
        *head,
        f"From each relay's `{LAG_METRIC}` histogram (the bare relay samples its loop exactly as "
        "the sidecar does: a 20 Hz timer, the same buckets, uvloop's clock in whole "
        "milliseconds), scraped before and after each of its rounds (outside the CPU windows), "
        "so only its own rounds count. Percentiles are "
        "interpolated within buckets as Prometheus's `histogram_quantile` does; *worst* is the "
        "upper bound of the highest bucket that saw a sample. Each round's first scrape may "
        "land one sample of its own in the round.",
        "",
        *table(["path", "load", "samples", "mean ms", "p50 ms", "p99 ms", "worst ≤ ms"], rows),
    ]


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


def _turn_gap(res: Results, sidecar: str, *, slow: bool = False) -> float:
    first, later, _ = first_turn_p50s(res, sidecar, slow=slow)
    return first - later


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
        row("first turn p50 above a later turn's, ms", _turn_gap(res, new), _turn_gap(res, old),
            3),
        row(f"the same, provider answering in {res.plan.provider_ms:g} ms",
            _turn_gap(res, new, slow=True), _turn_gap(res, old, slow=True), 3),
        row("event-loop lag p99 at the latency load, ms", lag_ms(res.latency[new], 0.99),
            lag_ms(res.latency[old], 0.99), 3),
        row("event-loop lag p99 at the streaming load, ms", lag_ms(st[new], 0.99),
            lag_ms(st[old], 0.99), 3),
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
