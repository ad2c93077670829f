"""The fleet simulator's section of bench/RESULTS.md."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from bench.fleet_sim import metrics
from bench.fleet_sim.run import STATUS_SIDECARS, Latency, Options, SizeResult
from bench.sections import markers

START, END = markers("fleet-sim")
_ZERO = metrics.Window(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, ())


def _kib(value: float) -> str:
    return f"{value / 1024:.2f}"


def _per(fleet: float, fixed: float, n: int, k: float) -> str:
    """The fleet's part of an etcd rate, per sidecar; n/a when it is not clearly above the
    fixed part's own variation (the fleet's window minus the baseline window, both measured:
    a fixed part that dwarfs the fleet's, as configsvc's listing of every route each tick does
    at 1,000 agents, leaves the difference to noise; read the adapter column then)."""
    if fleet / k <= 0.1 * fixed:  # as measured, before it is multiplied back
        return "n/a"
    return _kib(fleet / n)


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
        k = r.dilation  # the fleet's part of each rate is multiplied back by it
        w, b = r.window, r.baseline or _ZERO
        if w is None:
            rows.append(f"| {r.size} | " + " | ".join(["-"] * 14) + " |")
            continue
        fixed = min(r.size, model.pods_per_agent)  # the rollout agent's, at the real pace
        n = max(1, r.synced - fixed)

        def fleet(field: str, w: metrics.Window = w, b: metrics.Window = b, k: float = k) -> float:
            """The ordinary sidecars' part of a rate, at their real pace."""
            return k * (float(getattr(w, field)) - float(getattr(b, field)))

        def total(field: str, w: metrics.Window = w, b: metrics.Window = b) -> float:
            return float(getattr(b, field)) + fleet(field, w, b)

        beats = r.beats_per_s
        fixed_beats = fixed / model.health_interval
        busy, busy_b = sum(w.configsvc_cpu), sum(b.configsvc_cpu)
        cores = busy_b + k * (busy - busy_b)
        ingest = f"{cores:.2f} ({busy / beats * 1000:.2f} ms)" if beats else "-"
        size = f"{r.size}" + (f" (dilated by {k:g})" if k != 1 else "")
        rows.append(
            f"| {size} | {r.agents} | {_per(fleet('sent_per_s'), b.sent_per_s, n, k)} "
            f"| {_kib(k * r.adapter_bytes_per_s / n)} "
            f"| {_per(fleet('received_per_s'), b.received_per_s, n, k)} "
            f"| {total('writes_per_s'):.0f} | {total('proposals_per_s'):.0f} "
            f"| {total('db_in_use_growth_per_h') / 2**20:.0f} "
            f"| {max(0.0, fixed_beats + k * (beats - fixed_beats)):.0f} | {ingest} "
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
        b = r.baseline or _ZERO
        ordinary = max(1, r.synced - min(r.size, opts.model.pods_per_agent))
        kinds = ", ".join(
            f"{kind} {r.dilation * nbytes / ordinary:.0f} B/s "
            f"({r.dilation * keys / ordinary:.3f} keys/s)"
            for kind, (keys, nbytes) in sorted(
                r.adapter_kinds_per_s.items(), key=lambda item: -item[1][1]
            )
        )
        details.append(
            f"- {r.size}: the fixed part (configsvc and the rollout agent's sidecars alone, "
            f"before the fleet): etcd egress {_kib(b.sent_per_s)} KiB/s, ingress "
            f"{_kib(b.received_per_s)} KiB/s, {b.writes_per_s:.0f} writes/s, configsvc "
            f"{sum(b.configsvc_cpu):.2f} cores; started in {r.started_s:.0f} s, "
            f"{r.per_connection} sidecar(s) per etcd connection; {r.watchers:.0f} etcd "
            f"watchers on {r.streams:.0f} streams, "
            f"{r.keys:.0f} keys; {r.requests_per_s:.0f} requests/s, "
            f"{r.first_turns_per_s:.0f} first turns/s; keys reaching each sidecar, by kind "
            f"(key+value bytes): {kinds or '-'}; simulator loop lag p99 "
            f"{r.loop_lag.get('p99_ms', 0):.0f} ms; "
            + (
                f"watches re-established {r.watch_restarts}, relisted {r.resyncs}; failed "
                f"probes excused (a starved loop) {r.probes_excused}; endpoint failovers "
                f"{r.failovers or 0}; "
                if r.final_read
                else "watch restarts and failovers not read (the run ended first); "
            )
            + f"rollback {r.rollback}; {status}."
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
            "so k x 3 s for a size dilated by k)." + " Every size first runs the rollout agent's "
            f"{model.pods_per_agent} sidecars alone, at their real pace ({model.rollout_rate:g} "
            "requests/s each), for a baseline window: that fixed part (configsvc's own reads "
            "and watches, the rollout agent) is subtracted from the fleet's window before a "
            "rate is divided among the other sidecars, and added once to the totals (writes, "
            "proposals, DB growth, beats, configsvc cores). So the per-sidecar columns are what "
            "one ordinary sidecar costs, comparable across sizes and dilations."
            + (
                " A size **dilated by k** ran every period of its ordinary sidecars (requests, "
                "beats and presence lease, liveness probe) k times slower, because this machine "
                "could not run them in real time; their part of each rate is multiplied back by "
                "k (the fixed part is not); CPU per beat, propagation, rollback and status are "
                "as measured. Several sidecars share one etcd connection (one gRPC channel: "
                "their watches are watch ids on its one stream, as the adapter multiplexes a "
                "process's watches): etcd still keeps a watcher per range per sidecar and sends "
                "each its own copy of every event, so the bytes per sidecar are unchanged."
                if any(r.dilation != 1 for r in results)
                else ""
            ),
            "",
            "| sidecars | agents | etcd egress KiB/s per sidecar | received at the sidecar's "
            "adapter KiB/s | ingress KiB/s per sidecar "
            "| etcd writes/s | raft proposals/s | DB growth MiB/h | beats/s | configsvc CPU, "
            "cores of all replicas (per beat, each beat taken by two) | flag kill p50 / p99 ms "
            "| canary set p50 / p99 ms "
            "| bad canary: abort / all stable s | status of 1,000 sidecars s "
            "| simulator CPU, cores |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
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
