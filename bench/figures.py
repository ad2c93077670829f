"""The figures of one run: raw phase results in, percentiles, rates, CPU per unit and target
verdicts out; plus what machine and revision produced them."""

from __future__ import annotations

import importlib.metadata
import math
import platform
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench import plan as targets
from bench.phases import PathRun
from bench.plan import Plan, Target
from bench.profile import Hotspot
from bench.stack import Cores
from bench.stats import Latency, median, ratio

DIRECT, BARE, SIDECAR = "direct", "bare relay", "sidecar"
SATURATED = 0.9  # a core busier than this share is the bottleneck


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
    target: Target
    value: float
    how: str = ""

    @property
    def met(self) -> bool:
        return self.target.met(self.value)


def verdicts(res: Results) -> list[Verdict]:
    lat = {p: latency_of(res.latency[p]) for p in (DIRECT, SIDECAR)}
    side, bare = res.throughput[SIDECAR], res.throughput[BARE]
    tp_side = median_rate(side)
    stream = res.streaming[SIDECAR]
    return [
        Verdict(targets.ADDED_P50, lat[SIDECAR].p50 - lat[DIRECT].p50),
        Verdict(targets.ADDED_P99, lat[SIDECAR].p99 - lat[DIRECT].p99),
        Verdict(targets.THROUGHPUT, tp_side, "measured"),
        Verdict(targets.THROUGHPUT, capacity(side), "per relay CPU-second"),
        Verdict(targets.VS_BARE, 100.0 * paired_ratio(side, bare), "measured, paired rounds"),
        Verdict(targets.VS_BARE, 100.0 * ratio(capacity(side), capacity(bare)), "per CPU-second"),
        Verdict(targets.CPU_PER_EVENT, cpu_us_per(stream, events_of(stream))),
        Verdict(targets.RSS, res.rss_end_mb.get(SIDECAR, math.nan)),
    ]


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
