"""The figures of one run: raw phase results in, percentiles, rates, CPU per unit, event-loop
lag and the guard's verdicts out; plus what machine and revision produced them."""

from __future__ import annotations

import importlib.metadata
import math
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench import plan as targets
from bench.looplag import LAG_METRIC
from bench.phases import PathRun
from bench.plan import Plan, Target
from bench.profile import Hotspot
from bench.stack import BARE, DIRECT, FIRST, LATER, SIDECAR, Cores, turn_path
from bench.stats import Latency, median, ratio

__all__ = ["BARE", "DIRECT", "SIDECAR"]  # re-exported: the report names the paths from here

SATURATED = 0.9  # a core busier than this share is the bottleneck
HELD = 0.9  # a path answering an open loop slower than this share of direct's rate fell behind


@dataclass
class Results:
    plan: Plan
    cores: Cores
    paths: list[str]
    latency: dict[str, PathRun]
    throughput: dict[str, PathRun]
    streaming: dict[str, PathRun]
    rss_start_mb: dict[str, float]
    rss_end_mb: dict[str, float]
    started_at: str
    wall_seconds: float
    notes: list[str] = field(default_factory=list)
    quiet_threshold: float = 0.15  # share of a core others may use before a round is disturbed
    discarded: dict[str, int] = field(default_factory=dict)  # re-run rotations by phase
    speed_us: tuple[float, ...] = ()  # bench.cpu.speed_reference before and after the phases
    profile_files: dict[str, Path] = field(default_factory=dict)
    profiles: dict[str, tuple[int, list[Hotspot]]] = field(default_factory=dict)
    baseline_revision: str = ""  # git revision of the --baseline checkout, when one ran
    first_turns: dict[str, PathRun] = field(default_factory=dict)  # by turn_path name
    # the same phase with the provider answering after plan.provider_ms
    first_turns_slow: dict[str, PathRun] = field(default_factory=dict)
    peers: dict[str, str] = field(default_factory=dict)  # peer path name: its version

    @property
    def relays(self) -> list[str]:
        """Every path with a relay in it (all but direct), in the run's order."""
        return [p for p in self.paths if p != DIRECT]


# -- figures -----------------------------------------------------------------------------------


def latency_of(run: PathRun) -> Latency:
    return Latency.of([r.latency for r in run.load.replies])


def ttft_of(run: PathRun) -> Latency:
    return Latency.of([r.ttfb for r in run.load.replies])


def median_rate(run: PathRun) -> float:
    return median(run.round_rates)


def paired_ratio(run: PathRun, reference: PathRun) -> float:
    """Median over rotations of run's rate / reference's rate in the same rotation: the two
    ran seconds apart, so a machine that slows down for a while slows both alike."""
    pairs = [ratio(a, b) for a, b in zip(run.round_rates, reference.round_rates, strict=False)]
    return median([p for p in pairs if p == p])


def events_of(run: PathRun) -> int:
    return sum(r.events for r in run.load.replies)


def chunks_of(run: PathRun) -> int:
    return sum(r.chunks for r in run.load.replies)


def cpu_us_per(run: PathRun, count: int) -> float:
    return run.proxy_cpu / count * 1e6 if count else math.nan


def held(run: PathRun, direct: PathRun) -> bool:
    """Whether a path kept up with an open loop's rate: its replies came back at about the
    rate ``direct`` (the fake upstream alone) answered at in the same phase. Each round's rate
    counts the time until its last answer, so a relay that queues requests behind each other
    stretches its rounds and lowers it."""
    return run.load.rate >= HELD * direct.load.rate


def lag_ms(run: PathRun, q: float) -> float:
    """The ``q`` quantile (0..1) of the event-loop lag during the path's rounds, in ms; NaN
    when the path exports no lag histogram or it saw no sample."""
    return math.nan if run.lag is None else run.lag.quantile(q) * 1000.0


def first_turn_p50s(
    res: Results, sidecar: str = SIDECAR, *, slow: bool = False
) -> tuple[float, float, float]:
    """(first turn p50, later turn p50, direct p50) in ms from the first-turn phase (``slow``:
    the one with the provider answering after ``plan.provider_ms``); NaN when that phase did
    not run for ``sidecar``."""
    runs = res.first_turns_slow if slow else res.first_turns
    first = runs.get(turn_path(sidecar, FIRST))
    later = runs.get(turn_path(sidecar, LATER))
    direct = runs.get(DIRECT)
    if first is None or later is None or direct is None:
        return math.nan, math.nan, math.nan
    return latency_of(first).p50, latency_of(later).p50, latency_of(direct).p50


def capacity(run: PathRun) -> float:
    """Requests per second one core of relay CPU would serve at this run's CPU per request."""
    us = cpu_us_per(run, run.load.ok)
    return 1e6 / us if us == us and us > 0 else math.nan


def bottleneck(run: PathRun, cores: Cores, *, relayed: bool) -> str:
    if cores.proxy is None:
        return "unpinned (one core): not determined"
    proxy, load = run.core_share(cores.proxy), run.core_share(cores.load)
    found = []
    if relayed and proxy >= SATURATED:
        found.append(f"the relay's core {cores.proxy} ({proxy:.0%} busy)")
    if load >= SATURATED:
        found.append(f"core {cores.load}, load generator + fake upstream ({load:.0%} busy)")
    return " and ".join(found) or "no core saturated"


@dataclass(frozen=True, slots=True)
class Verdict:
    """One target judged: ``value`` in the target's unit, ``how`` the load it was measured
    under, ``detail`` the figures behind a ratio; ``skipped`` says why it could not be judged
    (then it is neither met nor missed, and the guard lets it pass)."""

    target: Target
    value: float
    how: str = ""
    detail: str = ""
    skipped: str = ""

    @property
    def met(self) -> bool:
        return not self.skipped and self.target.met(self.value)

    @property
    def status(self) -> str:
        if self.skipped:
            return "skipped"
        return "met" if self.met else "NOT MET"


def _us(value: float) -> str:
    return f"{value:,.0f} µs" if value == value else "-"


def _ms(value: float, digits: int = 2) -> str:
    return f"{value:+,.{digits}f} ms" if value == value else "-"


def verdicts(res: Results, sidecar: str = SIDECAR) -> list[Verdict]:
    """Issue 20's targets for ``sidecar``, each against the bare relay of the same run."""
    lat = {p: latency_of(res.latency[p]) for p in (DIRECT, BARE, sidecar)}
    tp_side, tp_bare = res.throughput[sidecar], res.throughput[BARE]
    st_side, st_bare = res.streaming[sidecar], res.streaming[BARE]
    cpu_req = cpu_us_per(tp_side, tp_side.load.ok), cpu_us_per(tp_bare, tp_bare.load.ok)
    added = lat[sidecar].p99 - lat[DIRECT].p99, lat[BARE].p99 - lat[DIRECT].p99
    ttft = ttft_of(st_side).p99, ttft_of(st_bare).p99
    per_event = cpu_us_per(st_side, events_of(st_side)), cpu_us_per(st_bare, events_of(st_bare))
    phases = (("latency", res.latency), ("throughput", res.throughput),
              ("streaming", res.streaming))  # fmt: skip
    failed = [(runs[sidecar].load.failed, phase) for phase, runs in phases]
    failed += [
        (run.load.failed, "first turns")
        for runs in (res.first_turns, res.first_turns_slow)
        for path, run in runs.items()
        if path.startswith(f"{sidecar}, ")
    ]
    no_lag = f"{sidecar} exports no {LAG_METRIC} on /metrics (a build before the metric)"
    out = [
        Verdict(
            targets.CPU_PER_REQUEST, ratio(*cpu_req), "throughput phase",
            f"{_us(cpu_req[0])} vs {_us(cpu_req[1])}",
        ),
        Verdict(
            targets.THROUGHPUT, 100.0 * paired_ratio(tp_side, tp_bare), "measured, paired rounds",
            f"{median_rate(tp_side):,.0f} vs {median_rate(tp_bare):,.0f} req/s",
        ),
        Verdict(
            targets.ADDED_P99, ratio(*added) if added[1] > 0 else math.nan, "",
            f"{_ms(added[0])} vs {_ms(added[1])}",
        ),
        Verdict(
            targets.TTFT_P99, ratio(*ttft), "", f"{ttft[0]:,.2f} vs {ttft[1]:,.2f} ms"
        ),
    ]  # fmt: skip
    for phase, runs in (("at 200 req/s", res.latency), ("at 20 streams/s", res.streaming)):
        lag = runs[sidecar].lag
        detail = "" if lag is None else f"{lag.count:,.0f} samples"
        if lag is not None and runs[BARE].lag is not None:
            detail += f"; the bare relay's {lag_ms(runs[BARE], 0.99):,.2f} ms"
        out.append(
            Verdict(
                targets.LOOP_LAG, lag_ms(runs[sidecar], 0.99), phase, detail,
                skipped=no_lag if lag is None else "",
            )
        )  # fmt: skip
    out += [
        Verdict(
            targets.CPU_PER_EVENT, ratio(*per_event), "",
            f"{per_event[0]:,.1f} vs {per_event[1]:,.1f} µs",
        ),
        Verdict(targets.RSS, res.rss_end_mb.get(sidecar, math.nan)),
        Verdict(targets.FAILED, float(sum(n for n, _ in failed)), "every phase",
                ", ".join(f"{phase}: {n}" for n, phase in failed if n)),
        _first_turn(res, sidecar),
    ]  # fmt: skip
    return out


def _first_turn(res: Results, sidecar: str) -> Verdict:
    """Judged where the provider takes any time at all (the claim runs beside its call, so a
    first turn need not wait for etcd); against a provider answering at once nothing can hide
    the etcd write, and that figure is shown beside it."""
    first, later, _ = first_turn_p50s(res, sidecar)
    instant = f"first {first:,.3f} ms, later {later:,.3f} ms (p50)"
    if not res.first_turns_slow:
        skipped = "" if first == first else "the first-turn phase did not run"
        return Verdict(targets.FIRST_TURN, first - later, "", instant, skipped=skipped)
    slow_first, slow_later, _ = first_turn_p50s(res, sidecar, slow=True)
    return Verdict(
        targets.FIRST_TURN,
        slow_first - slow_later,
        f"provider answering in {res.plan.provider_ms:g} ms",
        f"first {slow_first:,.3f} ms, later {slow_later:,.3f} ms (p50); with a provider "
        f"answering at once {first - later:+,.3f} ms ({instant})",
    )


def guard(found: list[Verdict]) -> bool:
    """The regression guard's decision: every target judged is met (a skipped one passes; a
    figure that could not be computed, NaN, does not)."""
    return all(v.met or v.skipped for v in found)


# -- machine -----------------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def git_revision(root: Path | None = None) -> str:
    """The short revision of this checkout (or of ``root``), marked when it has local edits."""
    root = root or Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "sidecar", "holdfast",
             "configsvc", "bench", ":(exclude)bench/RESULTS.md"],
            cwd=root, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} (with uncommitted changes)" if dirty else head
