"""``python -m bench.overhead`` (``make bench``): the sidecar's overhead, measured side by side
with calling the fake upstream directly, with a bare aiohttp relay and with the other gateways
``bench/setup.sh --peers`` installed (Portkey, LiteLLM), in one run.

Starts etcd, configsvc, the fake upstream, the sidecar, the bare relay and the peers (see
bench/stack.py, bench/peers.py), runs the latency, first-turn, throughput and streaming phases
(bench/phases.py), reads the relays' RSS, and writes bench/RESULTS.md (bench/report.py). It
reports figures and issue 20's targets; with ``--guard`` it exits 1 when one is missed (the
regression guard), otherwise only when something could not be measured at all. About four
minutes with both peers, two and a half without.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import uvloop

from bench import peers as peer_procs
from bench import phases
from bench.cpu import LOADGEN, UPSTREAM, Gate, speed_reference, wait_quiet
from bench.figures import Results, git_revision, guard, verdicts
from bench.plan import Plan
from bench.profile import ensure_py_spy, hotspots, start_recording
from bench.report import write_results
from bench.stack import FAST_RELEASE, STREAM_RELEASE, Cores, Stack, start_stack

DEFAULT_OUT = Path(__file__).resolve().parent / "RESULTS.md"


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


async def measure(
    stack: Stack,
    plan: Plan,
    cores: Cores,
    started_at: str,
    notes: list[str],
    gate: Gate,
    profile_dir: Path | None,
) -> Results:
    paths = stack.paths
    roles = {LOADGEN: os.getpid(), UPSTREAM: stack.fake_pid}
    ctx = phases.Context(paths, roles, gate)
    names = [p.name for p in paths]
    rss_start = {p.name: phases.rss_mb(p.pid) for p in paths}
    speed = [speed_reference()]
    say(f"warming up ({plan.warmup_seconds:g} s per path and shape)")
    await phases.warm_up(paths, plan.concurrency, plan.warmup_seconds)
    await asyncio.to_thread(stack.check_budget)

    say(f"latency: {plan.rate:g} req/s open loop, {plan.latency_seconds:g} s per path")
    latency = await phases.latency(ctx, plan.rate, plan.latency_seconds, plan.latency_rounds)

    say(
        f"first turns: {plan.first_turn_rate:g} req/s open loop, new sessions against a pinned "
        f"one, {plan.first_turn_seconds:g} s per path"
    )
    turns = phases.Context(stack.first_turn_paths, roles, gate)
    first_turns = await phases.first_turns(
        turns, plan.first_turn_rate, plan.first_turn_seconds, plan.first_turn_rounds
    )
    say(f"first turns again, the provider answering after {plan.provider_ms:g} ms")
    await asyncio.to_thread(stack.provider_latency, plan.provider_ms)
    try:
        first_turns_slow = await phases.first_turns(
            turns,
            plan.first_turn_rate,
            plan.first_turn_seconds,
            plan.first_turn_rounds,
            name="first turn, slower provider",
        )
    finally:
        await asyncio.to_thread(stack.provider_latency, 0.0)

    say(f"throughput: {plan.concurrency} connections, {plan.throughput_seconds:g} s per path")
    throughput = await phases.throughput(
        ctx, plan.concurrency, plan.throughput_seconds, plan.throughput_rounds
    )

    say(f"streaming: route set-stable -> {STREAM_RELEASE!r} through holdfastctl")
    await asyncio.to_thread(stack.set_stable, STREAM_RELEASE)
    ctx = phases.Context(stack.paths, roles, gate)  # the sidecars' session of this release
    await phases.warm_up(ctx.endpoints, phases.STREAM_POOL, plan.warmup_seconds / 2)
    say(
        f"streaming: {plan.stream_rate:g} streams/s x {plan.stream_tokens} tokens, "
        f"{plan.stream_seconds:g} s per path"
    )
    streaming = await phases.streaming(
        ctx, plan.stream_rate, plan.stream_seconds, plan.stream_rounds
    )
    rss_end = {p.name: phases.rss_mb(p.pid) for p in paths}
    speed.append(speed_reference())
    profiles = await profile_relays(stack, plan, profile_dir) if profile_dir else {}
    return Results(
        plan=plan,
        cores=cores,
        paths=names,
        latency=latency,
        throughput=throughput,
        streaming=streaming,
        rss_start_mb=rss_start,
        rss_end_mb=rss_end,
        started_at=started_at,
        wall_seconds=0.0,  # set by main, which also counts start-up
        notes=notes,
        quiet_threshold=gate.threshold,
        speed_us=tuple(speed),
        discarded=dict(gate.discarded),
        profile_files=profiles,
        first_turns=first_turns,
        first_turns_slow=first_turns_slow,
        peers={peer.name: peer.version for peer in stack.peers},
    )


async def profile_relays(stack: Stack, plan: Plan, out_dir: Path) -> dict[str, Path]:
    """py-spy on each of our relays under the throughput load, after (never during) the
    measurements; returns the collapsed-stack file of each relay. Peers are left out: py-spy
    cannot read Node, and the grouping charges samples to our own frames."""
    await asyncio.to_thread(stack.set_stable, FAST_RELEASE)
    recorded = {}
    peer_names = {peer.name for peer in stack.peers}
    for endpoint in stack.paths:
        if endpoint.pid is None or endpoint.name in peer_names:
            continue
        seconds = max(3.0, plan.throughput_seconds * 0.8)
        raw = out_dir / f"{endpoint.name.replace(' ', '_')}.collapsed.txt"
        say(f"profiling {endpoint.name} with py-spy for {seconds:.0f} s -> {raw}")
        spy = start_recording(endpoint.pid, seconds, raw)
        await phases.profile_load(endpoint, plan.concurrency, seconds + 1.0)
        await asyncio.to_thread(spy.wait, 30)
        recorded[endpoint.name] = raw
    return recorded


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the results")
    p.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply every phase's duration (0.2 for a quick smoke run; default 1)",
    )
    p.add_argument(
        "--quiet-threshold",
        type=float,
        default=0.15,
        help="wait until other processes (and hypervisor steal) take less than this share of "
        "a core (default 0.15)",
    )
    p.add_argument(
        "--max-wait", type=float, default=60.0, help="longest wait for quiet, seconds (60)"
    )
    p.add_argument(
        "--redo-budget",
        type=float,
        default=45.0,
        help="seconds the run may spend re-running rotations that other processes or steal "
        "disturbed beyond --quiet-threshold (default 45; scaled by --scale)",
    )
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="DIR",
        help="after measuring, sample each relay with py-spy under load (installed by "
        "bench/setup.sh) and write the collapsed stacks to DIR and a summary to the results",
    )
    p.add_argument("--keep-logs", type=Path, default=None, help="copy process logs here")
    p.add_argument(
        "--baseline",
        type=Path,
        default=None,
        metavar="DIR",
        help="also measure the sidecar of another checkout (e.g. `git worktree add DIR REV`, "
        "then `make setup` in DIR) as one more path of the same run, and compare",
    )
    p.add_argument(
        "--peers",
        default="auto",
        metavar="LIST",
        help="other gateways to run as paths: `auto` (default: every one bench/setup.sh "
        "--peers installed), `none`, or a comma-separated list of portkey, litellm (each must "
        "be installed)",
    )
    p.add_argument(
        "--guard",
        action="store_true",
        help="the regression guard: exit 1 when one of issue 20's targets (relative to the "
        "bare relay of this run) is missed",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        peer_keys, peer_notes = peer_procs.choose(args.peers, peer_procs.installed())
    except peer_procs.PeerError as exc:
        say(str(exc))
        return 2
    plan = Plan().scaled(args.scale)
    cores = Cores.detect()
    cores.pin_self()  # before starting anything: children inherit the load core
    started_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    begun = time.monotonic()
    if args.profile is not None:
        ensure_py_spy()
        args.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="holdfast-bench-") as tmp:
        base = Path(tmp)
        say(
            "starting etcd, configsvc, fake upstream, bare relay, sidecar"
            + "".join(f", {peer_procs.NAMES[k]}" for k in peer_keys)
        )
        try:
            with start_stack(
                base,
                cores,
                stream_tokens=plan.stream_tokens,
                token_interval_ms=plan.token_interval_ms,
                baseline=args.baseline,
                peers=peer_keys,
            ) as stack:
                notes = [*peer_notes, *settle(args.quiet_threshold, args.max_wait)]
                gate = Gate(args.quiet_threshold, args.redo_budget * args.scale)
                results = uvloop.run(
                    measure(stack, plan, cores, started_at, notes, gate, args.profile)
                )
        finally:
            if args.keep_logs is not None:
                _copy_logs(base / "logs", args.keep_logs)
    results.wall_seconds = time.monotonic() - begun
    if args.baseline is not None:
        results.baseline_revision = git_revision(args.baseline)
    for name, raw in results.profile_files.items():
        if raw.exists():
            results.profiles[name] = hotspots(raw.read_text())
    write_results(args.out, results)
    say(f"wrote {args.out}")
    judged = verdicts(results)
    for v in judged:
        how = f" ({v.how})" if v.how else ""
        why = f": {v.skipped}" if v.skipped else ""
        say(f"  {v.target.what}{how}: {v.target.shown(v.value)} ({v.target.text}) {v.status}{why}")
    if args.guard:
        passed = guard(judged)
        say(f"guard: {'every target met' if passed else 'a target of issue 20 is missed'}")
        return 0 if passed else 1
    return 0


def settle(threshold: float, max_wait: float) -> list[str]:
    """Give other people's jobs on this machine a chance to finish before measuring."""
    say(
        f"waiting until other processes and steal take < {threshold:.0%} of a core "
        f"(at most {max_wait:g} s)"
    )
    waited, share = wait_quiet(threshold, max_wait)
    if share >= threshold:
        return [
            f"The machine was not quiet: after waiting {waited:.0f} s, other processes or the "
            f"hypervisor still took {share:.0%} of a core when the measurement began."
        ]
    return [f"Started after {waited:.0f} s of waiting for the machine to be quiet."]


def _copy_logs(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for log in src.glob("*.log"):
        (dst / log.name).write_bytes(log.read_bytes())


if __name__ == "__main__":
    sys.exit(main())
