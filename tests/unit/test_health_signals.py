"""Sidecar-side functional health: answer scanning, accumulation, snapshot records, prices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from holdfast.dialects import openai_chat
from holdfast.keyspace import HealthSnapshot, RecordError
from holdfast.keyspace.codec import encode_record
from holdfast.keyspace.session_spread import SessionSpread
from holdfast.keyspace.signals import LATENCY_BOUNDS_MS, ReleaseSignals, quantile
from sidecar.config.prices import PriceError, load_prices, parse_prices
from sidecar.pipeline.sse import SseEvents
from sidecar.signals.answer import StreamSummary, Summary, looks_like_refusal, of_answer
from sidecar.signals.book import Observation, SignalBook, category_of, error_class

CHAT = openai_chat.DIALECT
REQUEST = CHAT.parse({"model": "m", "messages": [{"role": "user", "content": "x" * 40}]})


def scan_body(raw: bytes) -> Summary | None:
    """A whole answer as the signals filter sees it: decoded by the dialect, then summarised."""
    answer = CHAT.decode_body(raw)
    return of_answer(answer, REQUEST) if answer is not None else None


class StreamScan:
    """A stream as the relay hands it to the signals filter: cut into events, each decoded."""

    def __init__(self) -> None:
        self.events = SseEvents()
        self.decoder = CHAT.stream_decoder()
        self.summary = StreamSummary()

    def feed(self, chunk: bytes) -> None:
        for event in self.events.feed(chunk):
            self.summary.feed(self.decoder.feed(event))

    def answer(self) -> Summary:
        self.summary.calls(self.decoder.finish())
        return self.summary.summary(REQUEST)


def body(content: str | None, *, usage: bool = True, tools: list[str] = ()) -> bytes:  # type: ignore[assignment]
    message: dict[str, object] = {"role": "assistant", "content": content}
    if tools:
        message["tool_calls"] = [
            {"id": f"c{i}", "type": "function", "function": {"name": n, "arguments": "{}"}}
            for i, n in enumerate(tools)
        ]
    obj: dict[str, object] = {"choices": [{"index": 0, "message": message}]}
    if usage:
        obj["usage"] = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    return json.dumps(obj).encode()


def sse(*objs: dict[str, object]) -> bytes:
    return (
        b"".join(b"data: " + json.dumps(o).encode() + b"\n\n" for o in objs) + b"data: [DONE]\n\n"
    )


def delta(d: dict[str, object]) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": d}]}


def test_a_non_streaming_answer_gives_usage_shape_and_tools() -> None:
    a = scan_body(body("Paris is the capital."))
    assert a is not None
    assert (a.tokens_in, a.tokens_out, a.usage_known, a.empty, a.refusal) == (
        7,
        3,
        True,
        False,
        False,
    )
    t = scan_body(body(None, tools=["lookup", "refund"]))
    assert t is not None and t.tools == ("lookup", "refund") and not t.empty
    e = scan_body(body("  ", usage=False))
    assert e is not None and e.empty and not e.usage_known and e.tokens_in == 10  # 40 chars / 4
    r = scan_body(body("I\u2019m sorry, but I can\u2019t help with that."))
    assert r is not None and r.refusal
    assert scan_body(b"not json") is None
    assert scan_body(b'{"error": {}}') is None


def test_a_stream_is_scanned_across_arbitrary_chunk_cuts() -> None:
    raw = sse(
        delta({"role": "assistant", "content": ""}),
        delta({"content": "Hello"}),
        delta({"content": " there"}),
        delta({"tool_calls": [{"index": 0, "function": {"name": "lookup", "arguments": ""}}]}),
        {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}},
    )
    for size in (1, 7, 64, len(raw)):
        scan = StreamScan()
        for i in range(0, len(raw), size):
            scan.feed(raw[i : i + size])
        a = scan.answer()
        assert (a.tokens_in, a.tokens_out, a.usage_known, a.tools) == (5, 2, True, ("lookup",))
        assert scan.summary.texts == 2 and scan.summary.head == "Hello there"


def test_a_stream_without_usage_is_estimated_and_runaway_input_stops_the_scan() -> None:
    scan = StreamScan()
    scan.feed(sse(delta({"content": "a"}), delta({"content": "b"}), delta({"content": "c"})))
    a = scan.answer()
    assert (a.tokens_out, a.usage_known, a.tokens_in) == (3, False, 10)
    runaway = StreamScan()
    runaway.feed(b"x" * 70_000)  # no event boundary: not SSE as we know it
    runaway.feed(sse(delta({"content": "late"})))
    assert runaway.summary.texts == 0 and runaway.summary.content == 0
    assert looks_like_refusal("As an AI, I cannot do that") and not looks_like_refusal("Sure!")


def obs(release: str = "r1", category: str = "default", **kw: object) -> Observation:
    base: dict[str, object] = {"session": None, "code": "ok", "latency_s": 0.2}
    return Observation(release=release, category=category, **(base | kw))  # type: ignore[arg-type]


def test_the_book_counts_errors_by_class_histograms_tools_and_sessions() -> None:
    book = SignalBook(max_categories=2, max_sessions=2)
    book.record(
        obs(
            answered=True,
            tokens_in=10,
            tokens_out=5,
            usage_known=True,
            tools=("t",),
            session="a",
            cost_usd=0.5,
        )
    )
    book.record(obs(code="upstream_5xx", session="a"))
    book.record(obs(code="refused", reason="budget_exhausted", session="b"))
    book.record(obs(code="upstream_timeout", latency_s=40.0, session="c"))
    book.record(obs(category="billing", code="client_disconnected"))
    book.record(obs(category="third", answered=True, empty=True, refusal=True))
    signals = {s.key: s for s in book.signals()}
    assert set(signals) == {("r1", "default"), ("r1", "billing"), ("r1", "other")}
    d = signals[("r1", "default")]
    assert d.count("requests") == 4 and d.count("error_upstream_5xx") == 1
    assert d.count("error_refused") == d.count("budget_rejections") == 1
    assert d.count("error_timeout") == 1 and d.tools == {"t": 1}
    assert d.hist("latency_ms")[-2] == 1 and d.hist("latency_ms")[3] == 3  # 30-60s, 100-250ms
    assert d.total("cost_usd") == 0.5 and d.count("tokens_out") == 5
    assert signals[("r1", "billing")].count("error_disconnected") == 1
    other = signals[("r1", "other")]
    assert other.count("empty") == other.count("refusals") == other.count("estimated") == 1
    # the LRU keeps two sessions: "a" (15 tokens) was evicted by "c"
    assert book.sessions == 2
    (spread,) = book.spreads()
    assert spread.sessions == 2 and sum(spread.tokens) == 2
    assert error_class("ok") is None and error_class("provider_key_missing") == "refused"
    assert category_of(None) == "default" and category_of("bad category!") == "other"


def test_signals_merge_subtract_detect_restarts_and_round_trip() -> None:
    book = SignalBook()
    for _ in range(3):
        book.record(obs(answered=True, tokens_out=4, tools=("x",)))
    (a,) = book.signals()
    twice = a.combined(a)
    assert twice.count("requests") == 6 and twice.tools == {"x": 6}
    assert twice.combined(a, -1) == a
    assert not twice.regressed_from(a) and a.regressed_from(twice)
    snap = HealthSnapshot(
        sidecar_id="sc-1",
        agent="support",
        at=2.0,
        started_at=1.0,
        config_revision=9,
        signals=(a,),
        sessions=(SessionSpread(release="r1", sessions=1),),
    )
    assert HealthSnapshot.decode(snap.encode()) == snap
    assert quantile(LATENCY_BOUNDS_MS, a.hist("latency_ms"), 0.5) == pytest.approx(175.0)
    assert quantile(LATENCY_BOUNDS_MS, (0,) * 12, 0.5) is None


def test_decoding_ignores_unknown_signals_and_refuses_bad_ones() -> None:
    extra = {
        "release": "r1",
        "category": "c",
        "counts": {"requests": 2, "future": 1},
        "hists": {"latency_ms": [1, 2], "new_hist": [1]},
    }
    s = ReleaseSignals.from_map(extra)
    assert s.counts == {"requests": 2} and s.hists == {}
    for bad in ({"counts": {"requests": -1}}, {"counts": {"requests": 1.5}}, {"counts": [1]}):
        with pytest.raises(RecordError):
            ReleaseSignals.from_map({"release": "r1", "category": "c", **bad})
    old = encode_record(
        "health",
        {"sidecar_id": "s", "agent": "a", "at": 1.0, "started_at": 0.0, "config_revision": 1},
    )
    assert HealthSnapshot.decode(old).signals == ()


def test_prices(tmp_path: Path) -> None:
    table = parse_prices({"r2": {"input_per_1m": 1.0, "output_per_1m": 2.0}, "m": {}})
    assert table.cost("r2", "m", 1_000_000, 500_000) == 2.0
    assert table.cost("r9", "m", 10, 10) == 0.0 and table.cost("r9", "other", 1, 1) == 0.0
    bads: list[object] = [[], {"r": {"input_per_1m": -1}}, {"r": {"inp": 1}}]
    for bad in [*bads, {"r": {"input_per_1m": True}}]:
        with pytest.raises(PriceError):
            parse_prices(bad)
    path = tmp_path / "p.json"
    path.write_text("{nope")
    with pytest.raises(PriceError, match="not valid JSON"):
        load_prices(path)
    with pytest.raises(PriceError, match="cannot read"):
        load_prices(tmp_path / "missing.json")
    assert len(load_prices(None)) == 0


def test_deployment_markers_follow_the_route() -> None:
    from prometheus_client import CollectorRegistry

    from holdfast.keyspace import Route
    from sidecar.signals.metrics import SignalMetrics

    registry = CollectorRegistry()
    metrics = SignalMetrics(registry, "support")
    models = {"r1": "m1", "r2": "m2"}
    route = Route(agent="support", stable="r1", canary="r2", canary_percent=5.0, updated_at=100.0)
    metrics.mark_route(route, models, now=500.0)
    metrics.mark_route(route, models, now=600.0)  # unchanged roles keep their start time

    def markers() -> dict[tuple[str, str], float]:
        return {
            (s.labels["holdfast_release"], s.labels["role"]): s.value
            for m in registry.collect()
            if m.name == "holdfast_release_info"
            for s in m.samples
        }

    assert markers() == {("r1", "stable"): 100.0, ("r2", "canary"): 100.0}
    promoted = Route(agent="support", stable="r2", previous_stable="r1", updated_at=700.0)
    metrics.mark_route(promoted, models, now=701.0)
    assert markers() == {("r2", "stable"): 700.0}


def test_a_restarted_sidecar_dates_roles_from_the_route_not_its_last_change() -> None:
    import dataclasses

    from prometheus_client import CollectorRegistry

    from holdfast.keyspace import Rollout, Route, Shadow
    from sidecar.signals.metrics import SignalMetrics

    registry = CollectorRegistry()
    metrics = SignalMetrics(registry, "support")
    done = Rollout(
        release="r2", steps=(50.0,), interval_s=60.0, state="done", started_at=100.0,
        ended_at=400.0,
    )  # fmt: skip
    route = Route(
        agent="support",
        stable="r2",
        previous_stable="r1",
        rollout=done,
        shadow=Shadow(release="r3", percent=5.0, since=500.0),
        updated_at=900.0,  # a later, unrelated change (the shadow's share, say)
    )
    metrics.mark_route(route, {}, now=1000.0)  # this sidecar starts only now
    found = {
        (s.labels["holdfast_release"], s.labels["role"]): s.value
        for m in registry.collect()
        if m.name == "holdfast_release_info"
        for s in m.samples
    }
    assert found == {("r2", "stable"): 400.0, ("r3", "shadow"): 500.0}
    running = dataclasses.replace(done, state="running", ended_at=0.0)
    canary = dataclasses.replace(route, stable="r1", canary="r2", canary_percent=50.0,
                                 rollout=running, shadow=None)  # fmt: skip
    fresh = SignalMetrics(CollectorRegistry(), "support")
    fresh.mark_route(canary, {}, now=1000.0)
    assert fresh._markers == {("r1", "", "stable"): 900.0, ("r2", "", "canary"): 100.0}
