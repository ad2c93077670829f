"""The per-release summary of health signals (holdfast.signals.summary): pure, figures by hand."""

from __future__ import annotations

import pytest

from holdfast.keyspace.session_spread import SessionSpread
from holdfast.keyspace.signals import LATENCY_BOUNDS_MS, ReleaseSignals
from holdfast.signals.summary import by_release, release_status, summarize, window_figures


def latency(**buckets: int) -> tuple[int, ...]:
    """A latency histogram with ``b<i>=count`` in bucket i (upper bound LATENCY_BOUNDS_MS[i])."""
    out = [0] * (len(LATENCY_BOUNDS_MS) + 1)
    for key, count in buckets.items():
        out[int(key[1:])] = count
    return tuple(out)


# r1/default: 10 requests, 4 of them at most 25 ms and 6 in (50, 100] ms.
DEFAULT = ReleaseSignals(
    release="r1",
    category="default",
    counts={
        "requests": 10,
        "error_refused": 1,
        "error_upstream_5xx": 2,
        "error_timeout": 1,
        "usage_requests": 6,
        "estimated": 1,
        "tokens_in": 600,
        "tokens_out": 300,
        "empty": 1,
        "refusals": 2,
        "violations": 3,
        "budget_rejections": 1,
    },
    sums={"cost_usd": 0.0123456789},
    hists={"latency_ms": latency(b0=4, b2=6), "ttft_ms": latency(b1=6)},
    tools={"search": 2},
)
# r1/billing: 5 more requests, all in (250, 500] ms, 2 answers, one more tool.
BILLING = ReleaseSignals(
    release="r1",
    category="billing",
    counts={"requests": 5, "error_upstream_4xx": 1, "usage_requests": 2, "tokens_out": 100},
    sums={"cost_usd": 0.002},
    hists={"latency_ms": latency(b4=5)},
    tools={"search": 1, "lookup": 4},
)
R2 = ReleaseSignals(release="r2", category="default", counts={"requests": 3})


def test_one_record_figures_by_hand() -> None:
    m = summarize(DEFAULT)
    assert (m.requests, m.answers, m.estimated_answers) == (10, 6, 1)
    # Provider failures only: the refusal is Holdfast's, not the release's.
    assert m.failures == 3
    assert m.error_rate == pytest.approx(0.3)
    assert list(m.errors.items()) == [("refused", 1), ("upstream_5xx", 2), ("timeout", 1)]
    # rank 5 of 10: 4 below 25 ms, then linear inside (50, 100] -> 50 + 50 * 1/6
    assert m.p50_ms == pytest.approx(50 + 50 * 1 / 6)
    assert m.p95_ms == pytest.approx(50 + 50 * 5.5 / 6)
    assert m.ttft_p50_ms == pytest.approx(25 + 25 * 3 / 6)
    assert m.tokens_per_answer == pytest.approx(50.0)
    assert m.tokens_per_request == pytest.approx(150.0)
    assert m.cost_per_request == pytest.approx(0.0123456789 / 6)
    assert m.refusal_rate == pytest.approx(2 / 6)
    assert m.empty_rate == pytest.approx(1 / 6)
    assert m.violation_rate == pytest.approx(0.3)
    assert (m.violations, m.budget_rejections, m.tool_calls) == (3, 1, {"search": 2})


def test_no_traffic_has_no_rates() -> None:
    figures = window_figures(None)
    assert figures["requests"] == 0 and figures["answers"] == 0
    assert figures["errors"] == {} and figures["tool_calls"] == {}
    for rate in ("error_rate", "violation_rate", "refusal_rate", "empty_rate", "p50_ms"):
        assert figures[rate] is None, rate
    only_failures = summarize(ReleaseSignals(release="r", counts={"requests": 2}))
    assert only_failures.error_rate == 0.0
    assert only_failures.tokens_per_answer is None and only_failures.cost_per_request is None


def test_by_release_adds_every_category() -> None:
    merged = by_release([DEFAULT, BILLING, R2])
    assert list(merged) == ["r1", "r2"]
    r1 = merged["r1"]
    assert r1.category == "all"
    counts = (r1.count("requests"), r1.count("usage_requests"), r1.count("tokens_out"))
    assert counts == (15, 8, 400)
    assert r1.hist("latency_ms") == latency(b0=4, b2=6, b4=5)
    assert dict(r1.tools) == {"search": 3, "lookup": 4}
    assert r1.total("cost_usd") == pytest.approx(0.0143456789)


def test_sidecar_status_shape() -> None:
    spread = SessionSpread(release="r1", sessions=1, tokens=(1, 0, 0, 0, 0, 0), tokens_sum=40)
    status = release_status((DEFAULT, BILLING, R2), (spread,))
    assert list(status) == ["r1", "r2"]
    r1 = status["r1"]
    assert list(r1) == [
        "requests", "errors", "p50_ms", "p95_ms", "ttft_p50_ms", "ttft_p95_ms", "tokens_in",
        "tokens_out", "tokens_estimated_answers", "cost_usd", "empty_rate", "refusal_rate",
        "tool_calls", "violations", "violation_rate", "budget_rejections", "categories",
        "sessions",
    ]  # fmt: skip
    assert r1["requests"] == 15
    assert r1["errors"] == {"refused": 1, "upstream_4xx": 1, "upstream_5xx": 2, "timeout": 1}
    assert (r1["tokens_in"], r1["tokens_out"], r1["tokens_estimated_answers"]) == (600, 400, 1)
    assert r1["cost_usd"] == 0.014346  # rounded to a millionth of a dollar
    assert r1["refusal_rate"] == pytest.approx(2 / 8)
    assert r1["violation_rate"] == pytest.approx(3 / 15)
    assert r1["categories"] == ["billing", "default"]
    assert r1["sessions"] == spread.view()
    assert status["r2"]["sessions"] == SessionSpread(release="r2").view()


def test_fleet_window_shape() -> None:
    figures = window_figures(by_release([DEFAULT, BILLING])["r1"])
    assert list(figures) == [
        "requests", "failures", "error_rate", "errors", "p50_ms", "p95_ms", "ttft_p50_ms",
        "ttft_p95_ms", "answers", "tokens_per_answer", "tokens_per_request", "cost_per_request",
        "violations", "violation_rate", "refusal_rate", "empty_rate", "estimated_answers",
        "budget_rejections", "tool_calls",
    ]  # fmt: skip
    assert figures["failures"] == 4  # 5xx, timeout and the billing 4xx
    assert figures["error_rate"] == pytest.approx(4 / 15)
    assert figures["cost_per_request"] == pytest.approx(0.0143456789 / 8)
    assert figures["tokens_per_answer"] == pytest.approx(400 / 8)


def test_both_endpoints_show_the_same_figures() -> None:
    status = release_status((DEFAULT, BILLING, R2))
    for release, signals in by_release([DEFAULT, BILLING, R2]).items():
        fleet = window_figures(signals)
        shared = set(fleet) & set(status[release])
        assert shared >= {"requests", "errors", "p95_ms", "violation_rate", "tool_calls"}
        for key in shared:
            assert fleet[key] == status[release][key], (release, key)
