"""Time from ``canary set`` to the first canary session on every sidecar.

Real processes: one etcd, configsvc, the fake upstream and SIDECARS sidecars. Each trial clears
the canary, waits until every sidecar has applied that, then starts one client per sidecar that
opens a brand-new session every PACE_S seconds, sets the canary to 100 % through configsvc's HTTP
API, and records when each sidecar first serves a new session from the canary. The delay counts
from just before the API call: configsvc's etcd write, the watch to every sidecar, and one
request through the sidecar (a new session's first turn, which creates its pin in etcd before
it is answered). ``python -m bench.canary_propagation`` replaces its section of
bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import sys
import time
from typing import Final

import aiohttp
import uvloop

from bench.fleet import AGENT, Api, fleet, status
from bench.sections import markers, publish
from bench.stats import percentile

FLEETS: Final = (1, 8)
TRIALS: Final = 20
PACE_S: Final = 0.002
START, END = markers("canary-propagation")
_ids = itertools.count()


async def revision_of(http: aiohttp.ClientSession, sidecar: str) -> int:
    return int((await status(http, sidecar))["config"]["revision"] or 0)


async def converge(http: aiohttp.ClientSession, sidecars: list[str], revision: int) -> None:
    for url in sidecars:
        while await revision_of(http, url) < revision:  # noqa: ASYNC110 - another process
            await asyncio.sleep(0.01)


async def first_canary(
    http: aiohttp.ClientSession, url: str, trial: int, started: asyncio.Event
) -> float:
    """Open new sessions until one is served by the canary; the time of that answer."""
    await started.wait()
    while True:
        session = f"b{trial}-{next(_ids)}"
        async with http.post(
            f"{url}/v1/chat/completions",
            json={"model": AGENT, "messages": [{"role": "user", "content": "hi"}]},
            headers={"X-Holdfast-Session": session},
        ) as resp:
            await resp.read()
            if resp.headers.get("X-Holdfast-Release") == "canary":
                return time.perf_counter()
        await asyncio.sleep(PACE_S)


async def trial(api: Api, http: aiohttp.ClientSession, sidecars: list[str], n: int) -> list[float]:
    cleared = await api.call("DELETE", f"/v1/agents/{AGENT}/canary", {})
    await converge(http, sidecars, cleared["mod_revision"])
    started = asyncio.Event()
    waiters = [asyncio.create_task(first_canary(http, u, n, started)) for u in sidecars]
    started.set()
    await asyncio.sleep(0.05)  # clients are running against the old route
    t0 = time.perf_counter()
    await api.call("PUT", f"/v1/agents/{AGENT}/canary", {"release": "canary", "percent": 100})
    done = await asyncio.wait_for(asyncio.gather(*waiters), timeout=30)
    return [t - t0 for t in done]


async def claim_counts(http: aiohttp.ClientSession, sidecars: list[str]) -> tuple[int, int]:
    """First turns settled by etcd and first turns decided locally (etcd slower than
    --pin-create-timeout), summed over the fleet."""
    settled = local = 0
    for url in sidecars:
        pins = (await status(http, url))["pins"]
        settled += pins["claims_created"] + pins["claims_adopted"]
        local += pins["claims_fallback"]
    return settled, local


async def run() -> str:
    results: dict[int, list[list[float]]] = {}
    with fleet("bench-canary", max(FLEETS)) as running:
        async with aiohttp.ClientSession() as http:
            api = running.api(http)
            for name in ("stable", "canary"):
                await api.create_release(name, f"m-{name}", f"{running.fake_url}/v1")
            await api.set_stable("stable")
            for size in FLEETS:
                urls = running.urls[:size]
                results[size] = [
                    await trial(api, http, urls, size * 1000 + n) for n in range(TRIALS)
                ]
            claims = await claim_counts(http, running.urls)
    return render(results, claims)


def rows(size: int, trials: list[list[float]]) -> list[str]:
    every = [max(t) * 1000 for t in trials]  # the last sidecar of each trial
    first = [min(t) * 1000 for t in trials]
    each = [d * 1000 for t in trials for d in t]
    measures = [("each sidecar", each)]
    if size > 1:
        measures = [("first sidecar of a trial", first), *measures]
        measures.append(("every sidecar (last of a trial)", every))
    return [
        f"| {size} | {label} | {statistics.median(v):.1f} | {percentile(v, 90):.1f} | "
        f"{max(v):.1f} |"
        for label, v in measures
    ]


def render(results: dict[int, list[list[float]]], claims: tuple[int, int]) -> str:
    settled, local = claims
    return "\n".join(
        [
            START,
            "## Time from `canary set` to the first canary session on every sidecar",
            "",
            f"`python -m bench.canary_propagation`, {time.strftime('%Y-%m-%d %H:%M UTC')}: "
            f"{TRIALS} trials per fleet size; sidecar processes, one etcd and one configsvc on "
            f"this machine; a client per sidecar opens a new session every {PACE_S * 1000:g} ms. "
            "Delay from the API call to the first answer served by the canary, in ms.",
            "",
            "| sidecars | measure | p50 | p90 | max |",
            "|---|---|---|---|---|",
            *(row for size, trials in results.items() for row in rows(size, trials)),
            "",
            "Nothing polls: configsvc's compare-and-swap reaches every sidecar through its one",
            "etcd watch, and the next new session hashes onto the canary. Every new session's",
            "first turn creates its pin in etcd before it is answered (so each delay includes",
            "one such write), and the fleet is under that write load while the change spreads;",
            "with 8 sidecars, the clients, etcd and configsvc share the machine's cores.",
            f"First turns settled by etcd: {settled:,}; decided locally because etcd took",
            f"longer than `--pin-create-timeout`: {local:,}.",
            END,
        ]
    )


def main() -> int:
    return publish("canary-propagation", uvloop.run(run()))


if __name__ == "__main__":
    sys.exit(main())
