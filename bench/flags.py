"""Flags: evaluation rate in-process, OFREP request rate against one sidecar, and flag-change
propagation to every sidecar of a fleet.

* In-process: ``holdfast.flags.evaluate`` on three flag shapes (no rule, a fractional split, a
  rule with ``sem_ver`` and ``starts_with``), one context per call.
* OFREP: one sidecar process pinned to core 0; the load (aiohttp, CONCURRENCY connections) from
  this process on core 1, for OFREP_SECONDS, single-flag evaluations with a new targeting key
  each time.
* Propagation: N sidecar processes on one etcd and one configsvc; each trial kills or enables a
  flag through configsvc's HTTP API and takes, per sidecar, the timestamp of its
  ``config_applied`` log event for that revision (same host clock, microsecond ISO timestamps),
  so nothing polls the sidecars while the change spreads.

``python -m bench.flags`` replaces its section of bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Final

import aiohttp
import uvloop

from bench.fleet import Api, fleet
from bench.sections import markers, publish
from bench.stats import median, percentile
from holdfast.flags.definition import parse_file
from holdfast.flags.evaluate import evaluate
from holdfast_devtools.procs import ManagedProcess

FLEETS: Final = (20, 50)
TRIALS: Final = 15
EVALS: Final = 100_000
OFREP_SECONDS: Final = 5.0
CONCURRENCY: Final = 32
START, END = markers("flags")
FLAG_FILE: Final = {
    "flags": {
        "static": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "on",
        },
        "split": {
            "state": "ENABLED",
            "variants": {"a": "a", "b": "b", "c": "c"},
            "defaultVariant": "a",
            "targeting": {"fractional": [["a", 50], ["b", 30], ["c", 20]]},
        },
        "rule": {
            "state": "ENABLED",
            "variants": {"new": "new", "old": "old"},
            "defaultVariant": "old",
            "targeting": {
                "if": [
                    {
                        "and": [
                            {"sem_ver": [{"var": "version"}, ">=", "2.1.0"]},
                            {"starts_with": [{"var": "email"}, "ops"]},
                        ]
                    },
                    "new",
                    "old",
                ]
            },
        },
    }
}


def in_process() -> dict[str, float]:
    specs, _ = parse_file(FLAG_FILE)
    rates = {}
    for spec in specs:
        contexts = [
            {"targetingKey": f"user-{i}", "version": f"2.{i % 4}.0", "email": f"ops{i}@x.io"}
            for i in range(EVALS)
        ]
        t0 = time.perf_counter()
        for context in contexts:
            evaluate(spec, context, now=0.0)
        rates[spec.key] = EVALS / (time.perf_counter() - t0)
    return rates


async def ofrep_rate(http: aiohttp.ClientSession, url: str) -> float:
    done = 0
    stop = time.perf_counter() + OFREP_SECONDS

    async def worker(n: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < stop:
            i += 1
            body = {"context": {"targetingKey": f"w{n}-{i}"}}
            async with http.post(f"{url}/ofrep/v1/evaluate/flags/split", json=body) as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(CONCURRENCY)))
    return done / (time.perf_counter() - t0)


def applied_at(log_path: Path, revision: int, offsets: dict[Path, int]) -> float | None:
    """Epoch time of the sidecar's first config_applied event at ``revision`` or later, reading
    only what the log gained since the last look (``offsets``), so that the harness's own
    reading costs the fifty sidecars next to nothing while the change spreads."""
    with log_path.open("rb") as handle:
        handle.seek(offsets.get(log_path, 0))
        data = handle.read()
    complete = data[: data.rfind(b"\n") + 1]
    offsets[log_path] = offsets.get(log_path, 0) + len(complete)
    for line in complete.decode(errors="replace").splitlines():
        if '"config_applied"' not in line:
            continue
        event = json.loads(line)
        if event.get("revision", 0) >= revision:
            stamp = event["timestamp"].replace("Z", "+00:00")
            return dt.datetime.fromisoformat(stamp).timestamp()
    return None


async def propagation(api: Api, sides: list[ManagedProcess], done: int) -> list[list[float]]:
    """``done``: trials run before (the flag must really change: kill after enable, and so on;
    a kill of a killed flag is no change, and no sidecar would log one)."""
    trials = []
    offsets: dict[Path, int] = {}
    for s in sides:  # start every read at the end of what is logged so far
        offsets[s.log_path] = s.log_path.stat().st_size
    for n in range(TRIALS):
        verb = "kill" if (done + n) % 2 == 0 else "enable"
        t0 = time.time()
        body = await api.call("POST", f"/v1/flags/static/{verb}", {})
        revision = body["flag"]["mod_revision"]
        deadline = time.monotonic() + 30
        found: dict[Path, float] = {}
        # The sidecars stamp the moment themselves: the harness looks only afterwards (and
        # rarely), so its reading does not compete with the change it measures.
        await asyncio.sleep(0.5)
        while len(found) < len(sides):
            for s in sides:
                if s.log_path not in found and (d := applied_at(s.log_path, revision, offsets)):
                    found[s.log_path] = d - t0
            if len(found) < len(sides):
                assert time.monotonic() < deadline, f"only {len(found)} sidecars applied {revision}"
                await asyncio.sleep(0.2)
        trials.append(list(found.values()))
    return trials


async def run() -> str:
    evals = in_process()
    fleets: dict[int, list[list[float]]] = {}
    with fleet("bench-flags", fake=False) as running:
        async with aiohttp.ClientSession() as http:
            api = running.api(http)
            await api.call("POST", "/v1/flags/apply", {"content": json.dumps(FLAG_FILE)})
            ofrep_side = running.add_sidecar("ofrep", cpu=0)
            os.sched_setaffinity(0, {1})
            ofrep = await ofrep_rate(http, ofrep_side.url)
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
            ofrep_side.stop()
            running.sidecars.clear()
            for size in FLEETS:
                while len(running.sidecars) < size:
                    running.add_sidecar(f"s{len(running.sidecars)}", timeout=60)
                await asyncio.sleep(1.0)  # let start-up settle before timing
                done = sum(len(t) for t in fleets.values())
                fleets[size] = await propagation(api, running.sidecars, done)
    return render(evals, ofrep, fleets)


def render(evals: dict[str, float], ofrep: float, fleets: dict[int, list[list[float]]]) -> str:
    rows = []
    for size, trials in fleets.items():
        each = [d * 1000 for t in trials for d in t]
        last = [max(t) * 1000 for t in trials]
        rows.append(
            f"| {size} | {median(each):.1f} | {percentile(each, 99):.1f} | "
            f"{median(last):.1f} | {percentile(last, 99):.1f} | {max(last):.1f} |"
        )
    return "\n".join(
        [
            START,
            "## Flags: evaluation, OFREP, propagation",
            "",
            f"`python -m bench.flags`, {time.strftime('%Y-%m-%d %H:%M UTC')}, 2 cores.",
            "",
            "| in-process evaluation (`holdfast.flags.evaluate`) | evaluations/s | µs each |",
            "|---|---|---|",
            *(f"| `{k}` | {v:,.0f} | {1e6 / v:.1f} |" for k, v in evals.items()),
            "",
            f"OFREP `POST /ofrep/v1/evaluate/flags/split` against one sidecar (core 0), "
            f"{CONCURRENCY} connections from core 1: **{ofrep:,.0f} requests/s**.",
            "",
            f"Flag change (`kill`/`enable` through configsvc's API) → applied by every sidecar "
            f"process, {TRIALS} trials per fleet, ms from the API call:",
            "",
            "| sidecars | each p50 | each p99 | last of a trial p50 | last p99 | last max |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            "Target: p99 under 100 ms at 50 sidecars. The change travels configsvc → etcd → one",
            "watch per sidecar; every sidecar applies it within the same fan-out, and on two cores",
            "the tail is the scheduler running fifty Python processes.",
            END,
        ]
    )


def main() -> int:
    return publish("flags", uvloop.run(run()))


if __name__ == "__main__":
    sys.exit(main())
