"""The console with one agent of FLEET sidecars: what a page, a live update and a health sample
cost configsvc, and how large the pages are.

In process: configsvc's app (console mounted) over an in-memory store that holds FLEET busy
health snapshots (two releases, eight categories, tools and shadow comparisons each, the
bench/health_signals.py sidecar) and 70 s of their history, a rollout at step 2 of 4 with a
health policy. Each figure is the median of REPEAT requests through aiohttp's test client.
``python -m bench.console`` replaces its section of bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import replace
from typing import Any, Final

import uvloop
from aiohttp.test_utils import TestClient, TestServer

from bench.fleet import AGENT
from bench.health_signals import busy_book, snapshot_of
from bench.sections import markers, publish
from configsvc.budgets import BudgetOps
from configsvc.console import ConcernOps, Console
from configsvc.contracts import ContractOps
from configsvc.experiments import ExperimentOps
from configsvc.flags import FlagOps
from configsvc.health import FleetHealth, PolicyGate
from configsvc.http import Authorizer
from configsvc.metrics import ControlPlaneCollector, MetricsEndpoint
from configsvc.prompts.reads import PromptReads
from configsvc.releases import ConfigService
from configsvc.rollouts import RouteWatch
from configsvc.server.app import build_app
from holdfast.keyspace import Keyspace, Release, Rollout, Route
from holdfast.keyspace.policy import HealthPolicy
from holdfast.store.memory import MemoryStore

START, END = markers("console")
FLEET: Final = 1000
BEATS: Final = 36  # 70 s of history at a 2 s health interval
REPEAT: Final = 15
TOKEN: Final = "bench-console-token-0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def fill(store: MemoryStore, ks: Keyspace, clock: Clock) -> None:
    for name in ("stable", "canary"):
        release = Release(agent=AGENT, name=name, model=f"m-{name}", base_url="http://x/v1")
        await store.put(ks.release(AGENT, name), release.encode())
    rollout = Rollout(
        release="canary", steps=(5.0, 25.0, 50.0, 100.0), interval_s=600.0, step=1,
        started_at=clock.now - 600, step_started_at=clock.now - 60, policy=HealthPolicy(),
    )  # fmt: skip
    route = Route(agent=AGENT, stable="stable", canary="canary", canary_percent=25.0,
                  rollout=rollout, updated_at=clock.now)  # fmt: skip
    await store.put(ks.route(AGENT), route.encode())
    one = snapshot_of(busy_book(("stable", "canary"), 500), "sc-0", 0.0)
    start = clock.now - BEATS * 2.0
    for beat in range(BEATS):
        for i in range(FLEET):
            snap = replace(one, sidecar_id=f"{AGENT}.sc-{i}", at=start + beat * 2.0 + i / FLEET,
                           config_revision=1 if i % 50 == 0 else 10**6)  # fmt: skip
            await store.put(ks.health(snap.sidecar_id), snap.encode())


async def timed(client: TestClient[Any, Any], path: str, repeat: int = REPEAT) -> tuple[float, int]:
    """Median milliseconds of ``repeat`` GETs of ``path``, and the page's size in bytes."""
    times, size = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        async with client.get(path, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
            body = await resp.read()
            assert resp.status == 200, (path, resp.status, body[:300])
        times.append((time.perf_counter() - t0) * 1000)
        size = len(body)
    return statistics.median(times), size


async def measure() -> dict[str, Any]:
    clock = Clock()
    store = MemoryStore()
    ks = Keyspace("bench")
    service = ConfigService(store, ks)
    fleet = FleetHealth(store, ks, clock=clock)
    routes = RouteWatch(store, ks)
    gate = PolicyGate(fleet)
    t0 = time.perf_counter()
    await fleet.start()
    await routes.start()
    await fill(store, ks, clock)
    last = clock.now - 2.0
    while AGENT not in routes.routes or sum(b.at >= last for b in fleet.beats(AGENT)) < FLEET:  # noqa: ASYNC110
        await asyncio.sleep(0.05)  # the watches deliver what was written
    fill_s = time.perf_counter() - t0
    authorizer = Authorizer(TOKEN, (), require_token_for_reads=True)
    console = Console(
        service=service, fleet=fleet, gate=gate, routes=routes, authorizer=authorizer,
        secret=b"s" * 32, clock=clock,
        ops=ConcernOps(BudgetOps(service), FlagOps(service), ContractOps(service),
                       PromptReads(service), ExperimentOps(service)),
    )  # fmt: skip
    metrics = MetricsEndpoint(
        ControlPlaneCollector(
            routes=routes, fleet=fleet, elections={}, extra=console.metric_families, clock=clock
        )
    )
    app = build_app(service, authorizer, extra=[metrics], mounts=[console.mount])
    samples = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        console.sampler.sample_once()
        samples.append((time.perf_counter() - t0) * 1000)
    out: dict[str, Any] = {"fill_s": fill_s, "sample_ms": statistics.median(samples)}
    async with TestClient(TestServer(app)) as client:
        console.sampler.sample_once()
        out["agent_first"] = await timed(client, f"/ui/agents/{AGENT}", repeat=1)
        for name, path in (
            ("overview", "/ui"),
            ("agent", f"/ui/agents/{AGENT}"),
            ("sidecars_1", f"/ui/agents/{AGENT}/sidecars?page=1"),
            ("sidecars_20", f"/ui/agents/{AGENT}/sidecars?page=20"),
            ("metrics", "/metrics"),
        ):
            out[name] = await timed(client, path)
        renders = []
        for _ in range(REPEAT):
            console.feed.bump([AGENT])  # a new version: rendered afresh, as after each tick
            t0 = time.perf_counter()
            await console.fragments("agent", AGENT)
            renders.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        for _ in range(100):
            await console.fragments("agent", AGENT)  # the same version: every other viewer
        out["fragments_ms"] = statistics.median(renders)
        out["fragments_cached_us"] = (time.perf_counter() - t0) * 1e4
        out["beats"] = len(fleet.beats(AGENT))
    await routes.close()
    await fleet.close()
    return out


def render(r: dict[str, Any]) -> str:
    rows = [
        ("the fleet overview, `GET /ui`", "overview"),
        (
            "the agent's page, first view after a tick (the health gate's report evaluated)",
            "agent_first",
        ),
        ("the agent's page, `GET /ui/agents/bench` (route, gate, charts, fleet summary)", "agent"),
        ("its sidecars, page 1 of 20 (`?page=1`, the most troubled first)", "sidecars_1"),
        ("its sidecars, page 20", "sidecars_20"),
        ("configsvc's `GET /metrics`", "metrics"),
    ]
    lines = [
        START,
        "## The console with an agent of 1,000 sidecars",
        "",
        f"`python -m bench.console`, {time.strftime('%Y-%m-%d %H:%M UTC')}, in process on a "
        f"shared 2-core machine: configsvc's app with the console mounted, {r['beats']} live "
        f"sidecars of one agent (each snapshot: 2 releases x 8 categories, 16 tools, shadow "
        f"comparisons; {BEATS} beats of history), a rollout under the default health gate. "
        f"Medians of {REPEAT} requests through aiohttp's test client, bearer token.",
        "",
        "| what | time | page size |",
        "|---|---|---|",
    ]
    for label, key in rows:
        ms, size = r[key]
        lines.append(f"| {label} | {ms:.1f} ms | {size / 1024:.1f} KiB |")
    lines += [
        f"| one health sample of every agent (every 5 s, on the event loop: the charts' figures) "
        f"| {r['sample_ms']:.1f} ms | |",
        f"| a live update's fragments, rendered once per version | {r['fragments_ms']:.1f} ms | |",
        f"| the same fragments for each further viewer (cached) "
        f"| {r['fragments_cached_us']:.1f} µs | |",
        "",
        "No page renders a row per sidecar except the paged sidecar list (50 a page); the "
        "charts come from the sampler's bounded history, so a page costs the same for 10 or "
        "1,000 sidecars but for the sidecar list's sort.",
        END,
    ]
    return "\n".join(lines)


def main() -> int:
    return publish("console", render(uvloop.run(measure())))


if __name__ == "__main__":
    raise SystemExit(main())
