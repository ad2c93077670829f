"""Functional health: canary-gone-bad to stable everywhere, signal cost, snapshot size, aggregation.

1. Real processes (bench/health_rollback.py): a rollout at 50 % under the default health gate
   whose canary starts failing every request after HEALTHY_S; the time to the rollout's abort
   and to the last new session any sidecar sent to the canary, and the requests the bad canary
   served meanwhile.
2. In process (bench/health_signals.py): the metrics path of one request beside the same
   exchange without it, the encoded health snapshot of a busy sidecar, and configsvc's
   aggregation of FLEET simulated sidecars' snapshots (ingest, gate, status).

``python -m bench.health`` replaces its section of bench/RESULTS.md.
"""

from __future__ import annotations

import statistics
import time

import uvloop

from bench.health_rollback import HEALTHY_S, RATE, SIDECARS, TRIALS, propagation
from bench.health_signals import FLEET, aggregation, filter_cost, snapshot_size
from bench.sections import markers, publish

START, END = markers("health")


def render(trials: list[dict[str, float]], cost: dict[str, tuple[float, float]],
           size: tuple[int, int], agg: dict[str, float]) -> str:  # fmt: skip
    def col(key: str) -> str:
        values = [t[key] for t in trials]
        return f"{statistics.median(values):.2f} | {max(values):.2f}"

    return "\n".join([
        START,
        "## Functional health: a bad canary rolled back, and what the signals cost",
        "",
        f"`python -m bench.health`, {time.strftime('%Y-%m-%d %H:%M UTC')}. "
        f"{SIDECARS} sidecar processes (default 2 s health interval), one etcd, configsvc "
        f"(default 0.5 s controller tick, default gate: error-rate delta 0.05, p95 x1.5, 50 "
        f"samples, 3 failing evaluations on fresh canary data), the fake upstream, all on "
        f"this machine. A rollout at 50 % takes {RATE / 2:g} canary requests/s (every request "
        f"a new session); after {HEALTHY_S:g} s the canary's model fails every request. "
        f"{TRIALS} trials.",
        "",
        "| from the canary going bad to | median | max |",
        "|---|---|---|",
        f"| the rollout aborted (seconds) | {col('abort_s')} |",
        "| every sidecar serving stable to new sessions (seconds) | "
        f"{col('stable_everywhere_s')} |",
        f"| requests the bad canary served meanwhile | {col('bad_requests')} |",
        "",
        "Metrics on the request path, in process: the signals filter (category, answer scan, "
        "book, Prometheus tokens/outcome/shape/duration/TTFT) and the per-endpoint request "
        "counter, µs per request, median of 3 x 20,000:",
        "",
        "| answer | no metrics | with metrics | cost |",
        "|---|---|---|---|",
        *(f"| {k} | {b:.1f} | {w:.1f} | {w - b:.1f} |" for k, (b, w) in cost.items()),
        "",
        f"Health snapshot of a busy sidecar (3 releases x 8 categories = {size[1]} signal "
        f"records, tool mix, 8 tools per release, 2 shadow comparisons, 10,000 tracked "
        f"sessions): **{size[0]:,} bytes** of msgpack.",
        "",
        f"Aggregation for {FLEET} simulated sidecars (2 releases x 8 categories, 8 tools per "
        f"release and a shadow comparison each, 5 min of history): ingesting one beat of all "
        f"of them (decode + window bookkeeping) **{agg['ingest_ms']:.0f} ms** (every health "
        f"interval, spread over it as the beats arrive); the gate's evaluation of one rollout "
        f"(1 min window of signals and shadow comparisons since its start, every threshold "
        f"overall and per category), which the controller runs every tick: "
        f"**{agg['gate_ms']:.0f} ms**; one agent's `holdfastctl status` (1 min, 5 min and "
        f"since-start windows of signals, tools and shadow comparisons, sessions), on demand: "
        f"**{agg['status_ms']:.0f} ms**.",
        "",
        "Detection needs fresh data: the gate counts a failing evaluation only when a snapshot "
        "brought the canary new requests, and judges only traffic since the rollout started, "
        "so the abort lands after about fails-to-abort health intervals spread over the fleet; "
        "the route change then reaches every sidecar through its etcd watch in milliseconds "
        "(see canary-propagation).",
        END,
    ])  # fmt: skip


def main() -> int:
    trials = uvloop.run(propagation())
    return publish("health", render(trials, filter_cost(), snapshot_size(), aggregation()))


if __name__ == "__main__":
    raise SystemExit(main())
