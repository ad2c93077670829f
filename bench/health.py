"""Functional health: canary-gone-bad to stable everywhere, signal cost, snapshot size, aggregation.

1. Real processes (one etcd, configsvc with its default 0.5 s controller tick, the fake upstream,
   SIDECARS sidecars with the default 2 s health interval). A rollout of r2 at 50 % with the
   default health gate; new sessions arrive at RATE requests/s (so 50 canary requests/s). After
   HEALTHY_S the canary's fake model starts failing every request; we measure the time to the
   rollout's abort (as the API reports it) and to the last new session any sidecar sent to the
   canary, and count the requests the bad canary served.
2. In process: the whole metrics path of one request (the signals filter's open, answer scan and
   close: category, book, Prometheus tokens/outcome/shape/duration/TTFT series; and the
   per-endpoint request counter) beside the same exchange with no filter, non-streaming and
   streaming (30 chunks).
3. The encoded health snapshot of a busy sidecar (3 releases x 8 categories, 8 tools per
   release, 2 shadow comparisons, 10,000 sessions).
4. configsvc's aggregation for 500 simulated sidecars with such snapshots: ingesting one beat of
   each, and one status computation (what ``GET /v1/status`` computes for an agent: 1 min,
   5 min and since-start windows of signals, tools and shadow comparisons, sessions) plus the
   gate's evaluation.

``python -m bench.health`` replaces its section of bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import aiohttp
import uvloop
from multidict import CIMultiDict

from bench.sections import markers, replace_section
from configsvc.fleet_health import releases_status
from configsvc.health_verdict import evaluate
from configsvc.health_windows import FleetWindows
from holdfast.devtools import procs
from holdfast.devtools.etcd_local import EtcdNode
from holdfast.keyspace import HealthSnapshot, Release, ShadowStats
from holdfast.keyspace.policy import HealthPolicy
from holdfast.keyspace.tool_signals import HIST_LEN, ToolSignals
from sidecar.exchange import Chain, Exchange, Outcome
from sidecar.metrics import SidecarMetrics
from sidecar.routing import Resolved
from sidecar.signal_book import Observation, SignalBook
from sidecar.signals_filter import SignalsFilter

AGENT: Final = "bench"
SIDECARS: Final = 4
RATE: Final = 100.0  # new sessions per second over the fleet; the canary takes half
HEALTHY_S: Final = 8.0
TRIALS: Final = 3
FLEET: Final = 500
START, END = markers("health")


# --- 1. canary gone bad -> stable everywhere -----------------------------------------------


async def api(http: aiohttp.ClientSession, svc: str, token: str, method: str, path: str,
              body: dict[str, Any] | None = None) -> Any:  # fmt: skip
    headers = {"Authorization": f"Bearer {token}", "X-Holdfast-Actor": "bench"}
    async with http.request(method, svc + path, json=body, headers=headers) as resp:
        data = await resp.json()
        if resp.status >= 400:
            raise RuntimeError(f"{method} {path}: {resp.status} {data}")
        return data


async def trial(http: aiohttp.ClientSession, svc: str, token: str, fake: str,
                sidecars: list[str], ids: Any, n: int) -> dict[str, float]:  # fmt: skip
    # a fresh release per trial: the last trial's failures stay in its release's windows
    canary = f"canary{n}"
    await api(http, svc, token, "POST", f"/v1/agents/{AGENT}/releases",
              {"release": canary, "model": f"m-{canary}", "base_url": f"{fake}/v1"})  # fmt: skip
    plan = {"release": canary, "steps": [50, 100], "interval": "1h", "policy": {}}
    await api(http, svc, token, "POST", f"/v1/agents/{AGENT}/rollout", plan)
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
    before = await api(http, svc, token, "GET", f"/v1/agents/{AGENT}/rollout")
    if before["rollout"]["state"] != "running":  # a healthy canary must not be rolled back
        raise RuntimeError(f"healthy canary not running: {json.dumps(before)[:2000]}")
    async with http.put(f"{fake}/_control/models/m-{canary}", json={"error_rate": 1.0}):
        pass
    bad_at = time.monotonic()
    while True:
        status = await api(http, svc, token, "GET", f"/v1/agents/{AGENT}/rollout")
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
    base = Path(tempfile.mkdtemp(prefix="bench-health-"))
    token = secrets.token_hex(8)
    with EtcdNode("bench-health") as node:
        fake = procs.fakellm(base / "logs").start()
        svc = procs.configsvc(base / "logs", [node.client_url], "dev", token).start()
        sides = [
            procs.sidecar(
                base / "logs", AGENT, [node.client_url], "dev", base / f"s{i}", name=f"s{i}"
            ).start()
            for i in range(SIDECARS)
        ]
        try:
            async with aiohttp.ClientSession() as http:
                await api(http, svc.url, token, "POST", f"/v1/agents/{AGENT}/releases",
                          {"release": "stable", "model": "m-stable",
                           "base_url": f"{fake.url}/v1"})  # fmt: skip
                await api(http, svc.url, token, "PUT", f"/v1/agents/{AGENT}/route/stable",
                          {"release": "stable"})  # fmt: skip
                ids = itertools.count()
                return [
                    await trial(http, svc.url, token, fake.url, [s.url for s in sides], ids, n)
                    for n in range(TRIALS)
                ]
        finally:
            for proc in [*sides, svc, fake]:
                proc.stop()


# --- 2. filter cost ---------------------------------------------------------------------------

RELEASE = Release(agent=AGENT, name="r1", model="m1", base_url="http://127.0.0.1:1/v1")
BODY = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "model": "m1",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "word " * 60}}],
    "usage": {"prompt_tokens": 40, "completion_tokens": 60, "total_tokens": 100},
}).encode()  # fmt: skip
CHUNKS = [
    b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"word "}}]}\n\n' for _ in range(30)
] + [b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":40,"completion_tokens":30}}\n\n'
     b"data: [DONE]\n\n"]  # fmt: skip


def per_request_us(
    filters: list[Any], stream: bool, metrics: SidecarMetrics | None = None, n: int = 20_000
) -> float:
    headers = CIMultiDict({"X-Holdfast-Category": "billing"})
    resolved = Resolved(RELEASE, 1, "sess-1")
    request = {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}
    t0 = time.perf_counter()
    for i in range(n):
        ex = Exchange(operation="chat", body=request, resolved=resolved, request_id=str(i),
                      headers=headers, stream=stream)  # fmt: skip
        chain = Chain.open(filters, ex)
        if stream:
            for chunk in CHUNKS:
                chain.chunk(chunk)
        else:
            chain.body(200, BODY)
        chain.close(Outcome("ok", 200, 0.1, True))
        if metrics is not None:
            metrics.request_finished("chat", "r1", "ok", 0.1)
    return (time.perf_counter() - t0) / n * 1e6


def filter_cost() -> dict[str, tuple[float, float]]:
    metrics = SidecarMetrics(AGENT)
    sig = SignalsFilter(SignalBook(), metrics.signals)
    out = {}
    for label, stream in (("non-streaming", False), ("streaming, 31 chunks", True)):
        base = statistics.median(per_request_us([], stream) for _ in range(3))
        with_filter = statistics.median(per_request_us([sig], stream, metrics) for _ in range(3))
        out[label] = (base, with_filter)
    return out


# --- 3. snapshot size, 4. aggregation ---------------------------------------------------------

CATEGORIES: Final = [f"cat{i}" for i in range(8)]


def busy_book(releases: tuple[str, ...], sessions: int) -> SignalBook:
    book = SignalBook()
    for i in range(max(sessions, 2000)):
        book.record(Observation(
            release=releases[i % len(releases)], category=CATEGORIES[i % 8],
            session=f"s{i % sessions}", code="ok" if i % 50 else "upstream_5xx",
            latency_s=0.05 + (i % 40) / 10, ttft_s=0.05, tokens_in=40, tokens_out=12 + i % 30,
            usage_known=True, answered=True, tools=("lookup",) if i % 7 == 0 else (),
            cost_usd=0.0001,
        ))  # fmt: skip
    return book


def tools_of(releases: tuple[str, ...], calls: int) -> tuple[ToolSignals, ...]:
    latency = (calls // 2, calls // 4, calls // 4) + (0,) * (HIST_LEN - 3)
    return tuple(
        ToolSignals(release=r, tool=f"tool{t}", version="1.2.0", latency_ms=latency,
                    latency_ms_sum=calls * 40.0,
                    counts={"calls": calls, "outcome_timeout": calls // 50,
                            "violation_args": calls // 100, "violation_result": calls // 200})
        for r in releases for t in range(8)
    )  # fmt: skip


def shadow_of(releases: tuple[str, ...], samples: int) -> tuple[ShadowStats, ...]:
    return tuple(
        ShadowStats(primary=releases[0], shadow=r, epoch=1.0, samples=samples,
                    similarity_sum=samples * 0.9, similarity_min=0.2, tool_agree=samples // 3,
                    tool_samples=samples // 2, token_samples=samples,
                    primary_prompt_tokens=samples * 40, primary_completion_tokens=samples * 20,
                    shadow_prompt_tokens=samples * 40, shadow_completion_tokens=samples * 22,
                    primary_latency_ms_sum=samples * 300.0, shadow_latency_ms_sum=samples * 320.0)
        for r in releases[1:]
    )  # fmt: skip


def snapshot_of(book: SignalBook, sidecar: str, at: float) -> HealthSnapshot:
    releases = tuple(sorted({s.release for s in book.signals()}))
    return HealthSnapshot(sidecar_id=sidecar, agent=AGENT, at=at, started_at=0.0,
                          config_revision=1, signals=book.signals(),
                          sessions=book.spreads(), tools=tools_of(releases, 1000),
                          shadow=shadow_of(releases, 300))  # fmt: skip


def aggregation() -> dict[str, float]:
    book = busy_book(("stable", "canary"), 500)
    one = snapshot_of(book, "sc-0", 0.0)
    windows = FleetWindows()
    beats = 160  # 5 min 20 s of history at the 2 s interval
    for beat in range(beats - 1):
        for i in range(FLEET):
            windows.observe(replace(one, sidecar_id=f"sc-{i}", at=beat * 2.0 + i / FLEET))
    last = (beats - 1) * 2.0
    encoded = [
        replace(one, sidecar_id=f"sc-{i}", at=last + i / FLEET).encode() for i in range(FLEET)
    ]
    t0 = time.perf_counter()
    for raw in encoded:
        windows.observe(HealthSnapshot.decode(raw))
    ingest = time.perf_counter() - t0
    now = beats * 2.0
    t0 = time.perf_counter()
    policy = HealthPolicy(max_tokens_change=0.5, min_shadow_similarity=0.8)
    evaluate(policy, windows.window(AGENT, 60, now, since=0.0), canary="canary", stable="stable",
             shadow=windows.shadow_window(AGENT, 60, now, since=0.0))  # fmt: skip
    gate = time.perf_counter() - t0
    t0 = time.perf_counter()
    releases_status(windows, AGENT, "stable", "canary", now)
    status = time.perf_counter() - t0
    return {"ingest_ms": ingest * 1000, "gate_ms": gate * 1000, "status_ms": status * 1000}


def snapshot_size() -> tuple[int, int]:
    book = busy_book(("r1", "r2", "r3"), 10_000)
    snap = snapshot_of(book, "host-1234", 1.0)
    return len(snap.encode()), len(snap.signals)


# --- report -----------------------------------------------------------------------------------


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
    section = render(trials, filter_cost(), snapshot_size(), aggregation())
    print(section)
    replace_section("health", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
