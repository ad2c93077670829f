"""Query categories: the route's rules, the shared cap, and what reaches the book and /metrics."""

from __future__ import annotations

import json
from typing import Any

import pytest
from multidict import CIMultiDict
from prometheus_client import generate_latest

from configsvc.errors import InvalidRequest
from configsvc.traffic.categories import SetCategories, with_categories
from holdfast.dialects import RequestView, openai_chat
from holdfast.dialects.openai_chat import ChatRequest
from holdfast.keyspace import RecordError, Release, Route
from holdfast.keyspace.categories import MAX_CATEGORIES, MAX_SCANNED_CHARS, CategoryRule
from holdfast.keyspace.codec import decode_record, encode_record
from holdfast.signals.categories import RuleError, compile_rule
from sidecar.contracts.filter import VIOLATION_HEADER
from sidecar.ops.metrics import SidecarMetrics
from sidecar.pipeline.exchange import Chain, Exchange, Outcome
from sidecar.pipeline.stream_feed import StreamFeed
from sidecar.routing.resolve import Resolved
from sidecar.signals.book import SignalBook, summary
from sidecar.signals.categories import Categorizer, CategoryRules
from sidecar.signals.filter import SignalsFilter

RULES = (
    CategoryRule(category="billing", keywords=("Refund", "invoice")),
    CategoryRule(category="legal", pattern=r"\bGDPR\b|data (?:deletion|export)"),
    CategoryRule(category="vip", tenants=("acme",)),
    CategoryRule(category="acme-billing", keywords=("refund",), tenants=("acme",)),
)


CHAT = openai_chat.DIALECT


def ask(text: Any, *earlier: dict[str, Any], stream: bool = False) -> RequestView:
    messages = [*earlier, {"role": "user", "content": text}]
    return CHAT.parse({"model": "m", "stream": stream, "messages": messages})


def test_rules_match_keywords_patterns_and_tenants_first_match_wins() -> None:
    rules = CategoryRules(RULES)
    assert rules.match(ask("I want a REFUND now"), None) == "billing"
    assert rules.match(ask("Please handle my GDPR request"), None) == "legal"
    assert rules.match(ask("gdpr lower case"), None) is None  # the pattern is case-sensitive
    assert rules.match(ask("hello"), "acme") == "vip"  # tenant-only rule
    assert rules.match(ask("refund please"), "acme") == "billing"  # first match wins
    assert rules.match(ask("hello"), None) is None
    # the last user message counts, not an earlier one nor the assistant's
    history = {"role": "user", "content": "refund"}
    assert rules.match(ask("all good now", history), None) is None
    parts = [{"type": "text", "text": "about my"}, {"type": "text", "text": "invoice"}]
    assert rules.match(ask(parts), None) == "billing"
    # only the head of a huge message is scanned
    assert rules.match(ask("x" * MAX_SCANNED_CHARS + " refund"), None) is None
    assert rules.match(ChatRequest({"model": "m", "messages": "nope"}), None) is None


def test_the_header_wins_then_rules_then_default_and_rules_compile_once_per_route() -> None:
    route = Route(agent="a", stable="r1", categories=RULES)
    current: dict[str, Route | None] = {"route": route}
    cat = Categorizer(lambda: current["route"])
    assert cat.of(CIMultiDict({"X-Holdfast-Category": "support"}), ask("refund")) == "support"
    assert cat.of(CIMultiDict({"X-Holdfast-Category": "bad value!"}), ask("refund")) == "other"
    assert cat.of(CIMultiDict(), ask("refund")) == "billing"
    assert cat.of(CIMultiDict({"X-Holdfast-Tenant": "acme"}), ask("hi")) == "vip"
    assert cat.of(CIMultiDict(), ask("hi")) == "default"
    compiled = cat.rules_for(route)
    # a new route revision with the same rules keeps the compiled ones; new rules recompile
    same = Route(agent="a", stable="r2", categories=RULES)
    assert cat.rules_for(same) is compiled
    current["route"] = Route(agent="a", stable="r1")
    assert cat.of(CIMultiDict(), ask("refund")) == "default"
    assert Categorizer().of(CIMultiDict(), ask("refund")) == "default"


def test_rule_records_are_checked_and_round_trip_on_the_route() -> None:
    for bad in (
        {"category": "billing"},  # matches nothing
        {"category": "other", "keywords": ("x",)},  # reserved
        {"category": "bad name!", "keywords": ("x",)},
        {"category": "c", "keywords": ("",)},
        {"category": "c", "keywords": tuple(str(i) for i in range(33))},
        {"category": "c", "pattern": "x" * 513},
    ):
        with pytest.raises(RecordError):
            CategoryRule(**bad)
    with pytest.raises(RuleError, match="not valid RE2"):
        compile_rule(CategoryRule(category="c", pattern="(a)\\1"))  # backreference: not RE2
    route = Route(agent="a", stable="r1", categories=RULES)
    assert Route.decode(route.encode()) == route
    assert route.public()["categories"][0] == {
        "category": "billing",
        "keywords": ["Refund", "invoice"],
        "pattern": "",
        "tenants": [],
    }
    # a route written before rules existed reads as having none
    old = decode_record(Route(agent="a", stable="r1").encode(), kind="route")
    del old["categories"]
    assert Route.decode(encode_record("route", old)).categories == ()


def test_configsvc_admission_refuses_bad_rules_with_the_reason() -> None:
    def parse(body: Any) -> SetCategories:
        return SetCategories.parse(json.dumps(body).encode())

    ok = parse({"rules": [{"category": "billing", "keywords": ["refund"]}], "reason": "r"})
    assert ok.rules == (CategoryRule(category="billing", keywords=("refund",)),)
    cases: list[tuple[Any, str, str]] = [
        ({"rules": [{"category": "c", "pattern": "(unclosed"}]}, "not valid RE2", "pattern"),
        ({"rules": [{"category": "c", "pattern": "(a)\\1"}]}, "not valid RE2", "pattern"),
        ({"rules": [{"category": "c", "keywords": ["x"], "regex": "y"}]}, "unknown", "regex"),
        ({"rules": [{"category": "c"}]}, "needs keywords", "rules[0]"),
        ({"rules": [{"category": "c", "keywords": "x"}]}, "list of strings", "keywords"),
        ({"rules": [{"category": "c", "keywords": ["x"]}] * 33}, "at most 32", "rules"),
        ({"rules": "x"}, "must be a list", "rules"),
        ({"rules": [], "extra": 1}, "unknown", "extra"),
        ({"rules": [{"category": "c", "pattern": "a{1001}"}]}, "not valid RE2", "pattern"),
    ]
    for body, message, param in cases:
        with pytest.raises(InvalidRequest) as caught:
            parse(body)
        assert message in caught.value.message, (body, caught.value.message)
        assert param in (caught.value.param or ""), (body, caught.value.param)
    route = Route(agent="a", stable="r1")
    changed = with_categories(route, agent="a", rules=RULES, actor="ops", now=5.0)
    assert changed.categories == RULES and changed.updated_by == "ops"
    assert with_categories(changed, agent="a", rules=RULES, actor="x", now=6.0) is changed


RELEASE = Release(agent="a", name="r1", model="m1", base_url="http://127.0.0.1:1/v1")
ANSWER = json.dumps(
    {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "fine"}}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 2},
    }
).encode()
CHUNKS = [
    b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n',
    b'data: {"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":1}}\n\ndata: [DONE]\n\n',
]


def exchange(headers: dict[str, str], *, stream: bool = False, session: str = "s1") -> Exchange:
    return Exchange(
        dialect=CHAT,
        request=ask("hello", stream=stream),
        resolved=Resolved(RELEASE, 1, session),
        request_id="r",
        headers=CIMultiDict(headers),
        decoder=CHAT.stream_decoder() if stream else None,
    )


def run(filt: SignalsFilter, ex: Exchange, outcome: Outcome | None = None) -> None:
    chain = Chain.open([filt], ex)
    if ex.stream:  # as the relay does: the first byte's time, then each chunk's whole events
        assert ex.decoder is not None
        ex.first_byte = ex.elapsed()
        feed = StreamFeed(chain, ex.decoder)
        for chunk in CHUNKS:
            feed.feed(chunk)
        feed.end()
    else:
        chain.answer(200, CHAT.decode_body(ANSWER))
    chain.close(outcome or Outcome("ok", 200, 0.3, True))


def series(metrics: SidecarMetrics, name: str) -> list[dict[str, str]]:
    return [s.labels for m in metrics.registry.collect() for s in m.samples if s.name == name]


def test_one_cap_bounds_the_book_and_every_prometheus_series() -> None:
    metrics = SidecarMetrics("a")
    book = SignalBook()
    filt = SignalsFilter(book, metrics.signals)
    for i in range(1000):
        run(filt, exchange({"X-Holdfast-Category": f"cat{i}"}))
    categories = {s.category for s in book.signals()}
    assert len(categories) == MAX_CATEGORIES + 1 and "other" in categories
    assert "cat999" not in categories and "cat0" in categories
    for name in (
        "holdfast_release_requests_total",
        "gen_ai_client_operation_duration_seconds_count",
        "gen_ai_client_token_usage_count",
    ):
        labels = {s["holdfast_category"] for s in series(metrics, name)}
        assert labels == categories, name
    other = next(s for s in book.signals() if s.category == "other")
    assert other.count("requests") == 1000 - MAX_CATEGORIES


def test_latency_ttft_violations_and_sessions_reach_book_metrics_and_status() -> None:
    metrics = SidecarMetrics("a")
    book = SignalBook()
    filt = SignalsFilter(book, metrics.signals)
    run(filt, exchange({"X-Holdfast-Category": "billing"}, stream=True))
    ex = exchange({"X-Holdfast-Category": "billing"}, session="s2")
    ex.response_headers[VIOLATION_HEADER] = "lookup:args, refund:declared"
    run(filt, ex)
    # a refusal by the contract filter with no header counts one violation
    run(filt, exchange({}), Outcome("refused", None, 0.01, False, "contract_violation"))
    (billing,) = [s for s in book.signals() if s.category == "billing"]
    assert billing.count("violations") == 2 and sum(billing.hist("ttft_ms")) == 1
    assert sum(billing.hist("latency_ms")) == 2
    (default,) = [s for s in book.signals() if s.category == "default"]
    assert default.count("violations") == 1 and default.count("error_refused") == 1
    ttft = series(metrics, "gen_ai_server_time_to_first_token_seconds_count")
    assert ttft == [{"agent": "a", "holdfast_release": "r1", "holdfast_category": "billing"}]
    durations = series(metrics, "gen_ai_client_operation_duration_seconds_count")
    assert {(d["holdfast_category"], d["gen_ai_operation_name"]) for d in durations} == {
        ("billing", "chat"),
        ("default", "chat"),
    }
    text = generate_latest(metrics.registry).decode()
    assert 'holdfast_session_tokens_bucket{agent="a",holdfast_release="r1",le="100.0"} 2.0' in text
    assert 'holdfast_session_duration_seconds_gcount{agent="a",holdfast_release="r1"} 2.0' in text
    status = summary(book.signals(), book.spreads())["r1"]
    assert status["violations"] == 3 and status["violation_rate"] == 1.0
    assert status["ttft_p95_ms"] is not None
    sessions = status["sessions"]
    assert isinstance(sessions, dict) and sessions["sessions"] == 2
    assert sessions["tokens_buckets"]["le_100"] == 2 and sessions["tokens_p50"] is not None
