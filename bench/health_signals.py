"""What the health signals cost, in process: the part of ``bench.health`` without processes.

* The whole metrics path of one request (the signals filter's open, answer scan and close:
  category, book, Prometheus tokens/outcome/shape/duration/TTFT series; and the per-endpoint
  request counter) beside the same exchange with no filter, non-streaming and streaming (30
  chunks).
* The encoded health snapshot of a busy sidecar (3 releases x 8 categories, 8 tools per
  release, 2 shadow comparisons, 10,000 sessions).
* configsvc's aggregation for FLEET simulated sidecars with such snapshots: ingesting one beat
  of each, and one status computation (what ``GET /v1/status`` computes for an agent: 1 min,
  5 min and since-start windows of signals, tools and shadow comparisons, sessions) plus the
  gate's evaluation.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import replace
from typing import Any, Final

from multidict import CIMultiDict

from bench.fleet import AGENT
from configsvc.health.fleet import releases_status
from configsvc.health.verdict import evaluate
from configsvc.health.windows import FleetWindows
from holdfast.dialects import openai_chat
from holdfast.keyspace import HealthSnapshot, Release, ShadowStats
from holdfast.keyspace.policy import HealthPolicy
from holdfast.keyspace.tool_signals import HIST_LEN, ToolSignals
from sidecar.ops.metrics import SidecarMetrics
from sidecar.pipeline.exchange import Chain, Exchange, Outcome
from sidecar.pipeline.stream_feed import StreamFeed
from sidecar.routing.resolve import Resolved
from sidecar.signals.book import Observation, SignalBook
from sidecar.signals.filter import SignalsFilter

FLEET: Final = 500

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
    body = {"model": "m1", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    chat = openai_chat.DIALECT
    t0 = time.perf_counter()
    for i in range(n):
        # What the relay does per request: one decode by the dialect, shared by the filters.
        ex = Exchange(dialect=chat, request=chat.parse(body), resolved=resolved,
                      request_id=str(i), headers=headers,
                      decoder=chat.stream_decoder() if stream else None)  # fmt: skip
        chain = Chain.open(filters, ex)
        if stream:
            assert ex.decoder is not None
            feed = StreamFeed(chain, ex.decoder)
            for chunk in CHUNKS:
                feed.feed(chunk)
            feed.end()
        else:
            chain.answer(200, chat.decode_body(BODY))
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
