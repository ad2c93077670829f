"""The per-release summary of health signals: the figures a person (and a health gate) reads.

Computed once, here, from a ``ReleaseSignals`` record, for both places that show it: the
sidecar's ``/status`` (its own traffic since start, ``release_status``) and configsvc's fleet
status and rollout health gate (the fleet's windows, ``window_figures``). Each endpoint keeps
its JSON shape; the figures they share are the same numbers by construction. Pure: no I/O.

Rates are per request where every request counts (errors, contract violations) and per answer
where only an answer has the property (tokens, cost, refusals, empty answers): a failed
request has no tokens and no cost, and counting it would make a failing canary look cheaper.
A rate without a denominator is None, never 0.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from holdfast.keyspace.session_spread import SessionSpread
from holdfast.keyspace.signals import ERROR_CLASSES, LATENCY_BOUNDS_MS, ReleaseSignals, quantile

# Error classes that are the release's (provider) failures; refusals and disconnects are not.
FAILURE_CLASSES: Final = ("upstream_4xx", "upstream_5xx", "timeout", "unreachable")
ALL_CATEGORIES: Final = "all"


def by_release(signals: Iterable[ReleaseSignals]) -> dict[str, ReleaseSignals]:
    """All categories of each release added together (category "all")."""
    out: dict[str, ReleaseSignals] = {}
    for s in signals:
        base = out.get(s.release) or ReleaseSignals(release=s.release, category=ALL_CATEGORIES)
        out[s.release] = base.combined(s)
    return out


def _per(part: float, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseSummary:
    """The counts and figures of one release's (or one release x category's) signals."""

    requests: int = 0
    failures: int = 0  # requests that failed at the provider (FAILURE_CLASSES)
    errors: dict[str, int] = field(default_factory=dict)  # error class -> requests, nonzero
    p50_ms: float | None = None
    p95_ms: float | None = None
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    answers: int = 0  # answers whose tokens are known (reported or estimated)
    estimated_answers: int = 0  # of those, streams whose tokens were counted from content
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    violations: int = 0
    refusals: int = 0
    empty: int = 0
    budget_rejections: int = 0
    tool_calls: dict[str, int] = field(default_factory=dict)

    @property
    def error_rate(self) -> float | None:
        return _per(self.failures, self.requests)

    @property
    def violation_rate(self) -> float | None:
        return _per(self.violations, self.requests)

    @property
    def refusal_rate(self) -> float | None:
        return _per(self.refusals, self.answers)

    @property
    def empty_rate(self) -> float | None:
        return _per(self.empty, self.answers)

    @property
    def tokens_per_answer(self) -> float | None:
        return _per(self.tokens_out, self.answers)

    @property
    def tokens_per_request(self) -> float | None:
        return _per(self.tokens_in + self.tokens_out, self.answers)

    @property
    def cost_per_request(self) -> float | None:
        return _per(self.cost_usd, self.answers)


def summarize(s: ReleaseSignals) -> ReleaseSummary:
    hist, ttft = s.hist("latency_ms"), s.hist("ttft_ms")
    return ReleaseSummary(
        requests=s.count("requests"),
        failures=sum(s.count(f"error_{c}") for c in FAILURE_CLASSES),
        errors={c: s.count(f"error_{c}") for c in ERROR_CLASSES if s.count(f"error_{c}")},
        p50_ms=quantile(LATENCY_BOUNDS_MS, hist, 0.5),
        p95_ms=quantile(LATENCY_BOUNDS_MS, hist, 0.95),
        ttft_p50_ms=quantile(LATENCY_BOUNDS_MS, ttft, 0.5),
        ttft_p95_ms=quantile(LATENCY_BOUNDS_MS, ttft, 0.95),
        answers=s.count("usage_requests"),
        estimated_answers=s.count("estimated"),
        tokens_in=s.count("tokens_in"),
        tokens_out=s.count("tokens_out"),
        cost_usd=s.total("cost_usd"),
        violations=s.count("violations"),
        refusals=s.count("refusals"),
        empty=s.count("empty"),
        budget_rejections=s.count("budget_rejections"),
        tool_calls=dict(s.tools),
    )


def window_figures(s: ReleaseSignals | None) -> dict[str, Any]:
    """configsvc's figures of one window of one release (or release x category); None: none
    seen, every count 0 and every rate None."""
    m = summarize(s or ReleaseSignals(release="none"))
    return {
        "requests": m.requests,
        "failures": m.failures,
        "error_rate": m.error_rate,
        "errors": m.errors,
        "p50_ms": m.p50_ms,
        "p95_ms": m.p95_ms,
        "ttft_p50_ms": m.ttft_p50_ms,
        "ttft_p95_ms": m.ttft_p95_ms,
        "answers": m.answers,
        "tokens_per_answer": m.tokens_per_answer,
        "tokens_per_request": m.tokens_per_request,
        "cost_per_request": m.cost_per_request,
        "violations": m.violations,
        "violation_rate": m.violation_rate,
        "refusal_rate": m.refusal_rate,
        "empty_rate": m.empty_rate,
        "estimated_answers": m.estimated_answers,
        "budget_rejections": m.budget_rejections,
        "tool_calls": m.tool_calls,
    }


def release_status(
    signals: tuple[ReleaseSignals, ...], spreads: tuple[SessionSpread, ...] = ()
) -> dict[str, Mapping[str, object]]:
    """A sidecar's ``/status`` per release, all categories together, with the categories seen
    and the spread of the sessions it tracks (cumulative spend of multi-step agents)."""
    sessions = {s.release: s for s in spreads}
    out: dict[str, Mapping[str, object]] = {}
    for release, s in by_release(signals).items():
        m = summarize(s)
        spread = sessions.get(release) or SessionSpread(release=release)
        out[release] = {
            "requests": m.requests,
            "errors": m.errors,
            "p50_ms": m.p50_ms,
            "p95_ms": m.p95_ms,
            "ttft_p50_ms": m.ttft_p50_ms,
            "ttft_p95_ms": m.ttft_p95_ms,
            "tokens_in": m.tokens_in,
            "tokens_out": m.tokens_out,
            "tokens_estimated_answers": m.estimated_answers,
            "cost_usd": round(m.cost_usd, 6),
            "empty_rate": m.empty_rate,
            "refusal_rate": m.refusal_rate,
            "tool_calls": m.tool_calls,
            "violations": m.violations,
            "violation_rate": m.violation_rate,
            "budget_rejections": m.budget_rejections,
            "categories": sorted({c.category for c in signals if c.release == release}),
            "sessions": spread.view(),
        }
    return out
