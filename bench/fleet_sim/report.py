"""The fleet simulator's section of bench/RESULTS.md."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from bench.fleet_sim.run import STATUS_SIDECARS, Latency, Options, SizeResult
from bench.sections import markers

START, END = markers("fleet-sim")


def _kib(value: float) -> str:
    return f"{value / 1024:.2f}"


def _ms(lat: Latency | None) -> str:
    if lat is None or lat.p50_ms is None:
        return "-"
    missing = f" ({lat.missing} of {lat.n} missing)" if lat.missing else ""
    return f"{lat.p50_ms:.0f} / {lat.p99_ms:.0f}{missing}"


def _s(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, float) else "-"


def section(results: Sequence[SizeResult], opts: Options, command: str, machine: str) -> str:
    model = opts.model
    rows = []
    for r in results:
        k = r.dilation  # rates below are multiplied back by it (1: measured in real time)
        w = r.window
        if w is None:
            rows.append(f"| {r.size} | " + " | ".join(["-"] * 13) + " |")
            continue
        n = max(1, r.synced)
        beats = r.beats_per_s
        busy = sum(w.configsvc_cpu)
        ingest = f"{k * busy:.2f} ({busy / beats * 1000:.2f} ms)" if beats else "-"
        size = f"{r.size}" + (f" (dilated by {k:g})" if k != 1 else "")
        rows.append(
            f"| {size} | {r.agents} | {_kib(k * w.sent_per_s / n)} "
            f"| {_kib(k * w.received_per_s / n)} "
            f"| {k * w.writes_per_s:.0f} | {k * w.proposals_per_s:.0f} "
            f"| {k * w.db_in_use_growth_per_h / 2**20:.0f} | {k * beats:.0f} | {ingest} "
            f"| {_ms(r.flag_kill)} | {_ms(r.canary_set)} "
            f"| {_s(r.rollback.get('bad_to_abort_s'))} / "
            f"{_s(r.rollback.get('bad_to_all_stable_s'))} "
            f"| {_status_cell(r.status)} "
            f"| {r.sim_cpu:.2f} |"
        )
    gave = []
    for r in results:
        what = "; ".join(r.gave) if r.gave else "nothing gave"
        gave.append(f"- **{r.size} sidecars**: {what}.")
    details = []
    for r in results:
        if r.window is None:
            continue
        st = r.status
        status = (
            f"status of `big` ({st.get('sidecars_seen')} sidecars seen, {st.get('start')}; "
            "answered by "
            f"{st.get('answered_by')}): API p50 {_s(st.get('api_p50_s'))} s, max "
            f"{_s(st.get('api_max_s'))} s; `holdfastctl --json status big` p50 "
            f"{_s(st.get('cli_p50_s'))} s"
            if st and "api_p50_s" in st
            else (f"status: {st}" if st else "status: not measured below 1,000 sidecars")
        )
        details.append(
            f"- {r.size}: started in {r.started_s:.0f} s, {r.per_connection} sidecar(s) per etcd "
            f"connection; {r.watchers:.0f} etcd watchers on {r.streams:.0f} streams, "
            f"{r.keys:.0f} keys; {r.requests_per_s:.0f} requests/s, "
            f"{r.first_turns_per_s:.0f} first turns/s; simulator loop lag p99 "
            f"{r.loop_lag.get('p99_ms', 0):.0f} ms; watches re-established "
            f"{r.watch_restarts}, relisted {r.resyncs}; rollback {r.rollback}; {status}."
        )
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return "\n".join(
        [
            START,
            "## A fleet of simulated sidecars: what each costs etcd and configsvc",
            "",
            f"`{command}`, {stamp}, on {machine}. Real etcd (3 members), "
            f"{opts.replicas} real configsvc replicas, {opts.workers} simulator process(es) "
            "holding the sidecars (`bench/fleet_sim`: the sidecar's own watch, pins, leases and "
            "health publisher, wired as the sidecar wires them). Traffic model: "
            f"{model.pods_per_agent} sidecars per agent, {model.rate:g} request/s per sidecar, "
            f"{model.new_sessions:.0%} of them a new session's first turn, beats every "
            f"{model.health_interval:g} s; steady window {opts.window:.0f} s after "
            f"{opts.warmup:.0f} s of warm-up (at least three of a sidecar's request intervals, "
            "so k x 3 s for a size dilated by k)."
            + (
                " A size **dilated by k** ran every period of its simulated sidecars (requests, "
                "beats and presence lease, liveness probe) but the rollout agent's k times "
                "slower, because this machine could not run them in real time; the rates in its "
                "row (egress, ingress, writes, proposals, DB growth, beats) are the measured "
                "ones multiplied back by k; CPU per beat, propagation, rollback and status are "
                "as measured."
                if any(r.dilation != 1 for r in results)
                else ""
            ),
            "",
            "| sidecars | agents | etcd egress KiB/s per sidecar | ingress KiB/s per sidecar "
            "| etcd writes/s | raft proposals/s | DB growth MiB/h | beats/s | configsvc CPU, "
            "cores of all replicas (per beat, each beat taken by two) | flag kill p50 / p99 ms "
            "| canary set p50 / p99 ms "
            "| bad canary: abort / all stable s | status of 1,000 sidecars s "
            "| simulator CPU, cores |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
            "What gave:",
            "",
            *gave,
            "",
            "Details:",
            "",
            *details,
            END,
        ]
    )


def machine() -> str:
    return f"{os.cpu_count()} cores"


def _status_cell(status: dict[str, Any] | None) -> str:
    """The API's p50, only when the status did describe (nearly) all of the agent's sidecars."""
    if not status or "api_p50_s" not in status:
        return "-"
    seen = status.get("sidecars_seen") or 0
    if seen < 0.9 * STATUS_SIDECARS:
        return f"n/a (saw {seen})"
    return _s(status.get("api_p50_s"))
