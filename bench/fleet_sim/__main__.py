"""``python -m bench.fleet_sim --sizes 100,1000,10000``: one command, sizes as arguments, a
bounded run time (``--deadline`` per size); the figures go to bench/RESULTS.md's fleet-sim
section (``--no-publish``: print only)."""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time

from bench.fleet_sim.model import TrafficModel
from bench.fleet_sim.report import machine, section
from bench.fleet_sim.run import Options, SizeResult, run_size
from bench.sections import replace_section


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.fleet_sim", description=__doc__)
    p.add_argument("--sizes", default="100,1000,10000", help="fleet sizes, comma-separated")
    p.add_argument("--replicas", type=int, default=2, help="configsvc replicas")
    p.add_argument("--workers", type=int, default=1, help="simulator processes")
    p.add_argument(
        "--per-connection", type=int, default=0,
        help="sidecars sharing one etcd connection (0: 1 up to 1,000 sidecars, then size/1,000)",
    )  # fmt: skip
    p.add_argument("--window", type=float, default=30.0, help="steady window, seconds")
    p.add_argument("--warmup", type=float, default=10.0)
    p.add_argument(
        "--baseline", type=float, default=20.0,
        help="seconds of the rollout agent's sidecars alone, before the fleet: the fixed part "
        "of every rate, subtracted before the rates are divided among the fleet",
    )  # fmt: skip
    p.add_argument(
        "--settle", type=float, default=20.0,
        help="seconds a change (flag kill, canary set, abort) may take to reach every sidecar",
    )  # fmt: skip
    p.add_argument("--batch", type=int, default=100, help="sidecars started at a time")
    p.add_argument(
        "--patience", type=float, default=60.0,
        help="seconds a batch of sidecars may take to sync before the start is given up",
    )  # fmt: skip
    p.add_argument("--deadline", type=float, default=1200.0, help="seconds per size at most")
    p.add_argument("--health-interval", type=float, default=2.0)
    p.add_argument("--rate", type=float, default=1.0, help="requests/s per sidecar")
    p.add_argument(
        "--dilation", default="1",
        help="stretch every period of the simulated sidecars (but the rollout agent's) by this "
        "factor, for a machine that cannot run them in real time; rates are reported "
        "multiplied back (1: real time); one value, or one per size (e.g. 1,1,10)",
    )  # fmt: skip
    p.add_argument("--machine", default="", help="what to call this machine in the results")
    p.add_argument("--no-publish", action="store_true", help="print, do not touch RESULTS.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    dilations = [float(d) for d in args.dilation.split(",") if d.strip()]
    if len(dilations) not in (1, len(sizes)) or min(dilations) < 1:
        print("--dilation: one factor >= 1, or one per size", file=sys.stderr)
        return 2
    dilations = dilations * len(sizes) if len(dilations) == 1 else dilations

    def options(dilation: float) -> Options:
        return Options(
            replicas=args.replicas,
            workers=args.workers,
            per_connection=args.per_connection,
            window=args.window,
            warmup=args.warmup,
            baseline=args.baseline,
            batch=args.batch,
            settle=args.settle,
            patience=args.patience,
            deadline=args.deadline,
            model=TrafficModel(
                health_interval=args.health_interval, rate=args.rate, dilation=dilation
            ),
        )

    began = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - began:7.1f}s] {message}", file=sys.stderr, flush=True)

    results: list[SizeResult] = []
    for size, dilation in zip(sizes, dilations, strict=True):
        results.append(asyncio.run(run_size(size, options(dilation), log)))
        log(f"size {size}: gave: {results[-1].gave or 'nothing'}")
    command = "python -m bench.fleet_sim " + shlex.join(argv if argv is not None else sys.argv[1:])
    text = section(results, options(1.0), command.strip(), args.machine or machine())
    print(text)
    if not args.no_publish:
        replace_section("fleet-sim", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
