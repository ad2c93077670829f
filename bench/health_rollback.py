"""A canary gone bad, rolled back by the health gate: the part of ``bench.health`` with real
processes.

One etcd, configsvc with its default 0.5 s controller tick, the fake upstream, SIDECARS
sidecars with the default 2 s health interval. A rollout of a fresh release at 50 % with the
default health gate; new sessions arrive at RATE requests/s (so 50 canary requests/s). After
HEALTHY_S the canary's fake model starts failing every request; a trial measures the time to the
rollout's abort (as the API reports it) and to the last new session any sidecar sent to the
canary, and counts the requests the bad canary served.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any, Final

import aiohttp

from bench.fleet import AGENT, Api, fleet

SIDECARS: Final = 4
RATE: Final = 100.0  # new sessions per second over the fleet; the canary takes half
HEALTHY_S: Final = 8.0
TRIALS: Final = 3


async def trial(api: Api, http: aiohttp.ClientSession, fake: str,
                sidecars: list[str], ids: Any, n: int) -> dict[str, float]:  # fmt: skip
    # a fresh release per trial: the last trial's failures stay in its release's windows
    canary = f"canary{n}"
    await api.create_release(canary, f"m-{canary}", f"{fake}/v1")
    plan = {"release": canary, "steps": [50, 100], "interval": "1h", "policy": {}}
    await api.call("POST", f"/v1/agents/{AGENT}/rollout", plan)
    served: list[tuple[float, int, str]] = []  # sent at, sidecar, release
    running = True

    async def one(i: int) -> None:
        side = i % len(sidecars)
        sent = time.monotonic()
        body = {"model": AGENT, "messages": [{"role": "user", "content": f"q {i}"}]}
        async with http.post(f"{sidecars[side]}/v1/chat/completions", json=body,
                             headers={"X-Holdfast-Session": f"b-{i}"}) as resp:  # fmt: skip
            await resp.read()
            served.append((sent, side, resp.headers.get("X-Holdfast-Release", "?")))

    async def load() -> None:
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        for n in itertools.count():
            if not running:
                break
            await asyncio.sleep(max(0.0, start + n / RATE - time.monotonic()))
            task = asyncio.create_task(one(next(ids)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks, return_exceptions=True)

    loader = asyncio.create_task(load())
    await asyncio.sleep(HEALTHY_S)
    before = await api.call("GET", f"/v1/agents/{AGENT}/rollout")
    if before["rollout"]["state"] != "running":  # a healthy canary must not be rolled back
        raise RuntimeError(f"healthy canary not running: {json.dumps(before)[:2000]}")
    async with http.put(f"{fake}/_control/models/m-{canary}", json={"error_rate": 1.0}):
        pass
    bad_at = time.monotonic()
    while True:
        status = await api.call("GET", f"/v1/agents/{AGENT}/rollout")
        if status["rollout"]["state"] == "aborted":
            if status["rollout"]["release"] != canary or status["rollout"]["ended_at"] == 0:
                raise RuntimeError(f"unexpected rollout state: {status}")
            aborted_at = time.monotonic()
            break
        if time.monotonic() - bad_at > 60:
            raise RuntimeError(f"no abort within 60 s: {json.dumps(status)[:2000]}")
        await asyncio.sleep(0.05)
    await asyncio.sleep(3)
    running = False
    await loader
    last_canary = max(at for at, _, rel in served if rel == canary)
    bad = [s for s in served if s[0] >= bad_at and s[2] == canary]
    return {
        "abort_s": aborted_at - bad_at,
        "stable_everywhere_s": last_canary - bad_at,
        "bad_requests": float(len(bad)),
    }


async def propagation() -> list[dict[str, float]]:
    """TRIALS trials on one fleet, each with its own canary release."""
    with fleet("bench-health", SIDECARS) as running:
        async with aiohttp.ClientSession() as http:
            api = running.api(http)
            await api.create_release("stable", "m-stable", f"{running.fake_url}/v1")
            await api.set_stable("stable")
            ids = itertools.count()
            return [
                await trial(api, http, running.fake_url, running.urls, ids, n)
                for n in range(TRIALS)
            ]
