"""Running sums of release x category signals, and the figures a person reads from them.

``ReleaseSignals.combined`` builds a new record per addition; a fleet's window adds hundreds of
them, so ``Total`` keeps mutable sums and builds one record per key at the end.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from holdfast.keyspace.signals import (
    ERROR_CLASSES,
    LATENCY_BOUNDS_MS,
    ReleaseSignals,
    quantile,
)

Key = tuple[str, str]  # (release, category)
Signals = dict[Key, ReleaseSignals]
# Error classes that are the release's (provider) failures; refusals and disconnects are not.
FAILURE_CLASSES: Final = ("upstream_4xx", "upstream_5xx", "timeout", "unreachable")


class _Sum:
    """A mutable running sum of signals of one key: sparse adds, one record at the end."""

    __slots__ = ("category", "counts", "hists", "release", "sums", "tools")

    def __init__(self, release: str, category: str) -> None:
        self.release, self.category = release, category
        self.counts: dict[str, int] = {}
        self.sums: dict[str, float] = {}
        self.hists: dict[str, list[int]] = {}
        self.tools: dict[str, int] = {}

    def add(self, s: ReleaseSignals, sign: int) -> None:
        counts, sums, tools = self.counts, self.sums, self.tools
        for name, n in s.counts.items():
            counts[name] = counts.get(name, 0) + sign * n
        for name, x in s.sums.items():
            sums[name] = sums.get(name, 0.0) + sign * x
        for name, buckets in s.hists.items():
            have = self.hists.get(name)
            if have is None:
                self.hists[name] = [sign * b for b in buckets]
            else:
                for i, b in enumerate(buckets):
                    have[i] += sign * b
        for name, n in s.tools.items():
            tools[name] = tools.get(name, 0) + sign * n

    def record(self) -> ReleaseSignals:
        return ReleaseSignals(
            release=self.release,
            category=self.category,
            counts={k: v for k, v in self.counts.items() if v},
            sums={k: v for k, v in self.sums.items() if v},
            hists={k: tuple(v) for k, v in self.hists.items() if any(v)},
            tools={k: v for k, v in self.tools.items() if v},
        )


class Total:
    def __init__(self) -> None:
        self.sums: dict[Key, _Sum] = {}

    def add(self, signals: Iterable[ReleaseSignals], sign: int = 1) -> None:
        for s in signals:
            acc = self.sums.get(s.key)
            if acc is None:
                acc = self.sums[s.key] = _Sum(s.release, s.category)
            acc.add(s, sign)

    def result(self) -> Signals:
        return {key: acc.record() for key, acc in self.sums.items()}


def add_into(total: Signals, signals: Iterable[ReleaseSignals], sign: int = 1) -> None:
    for s in signals:
        have = total.get(s.key)
        if have is None:
            total[s.key] = s if sign == 1 else ReleaseSignals(release=s.release).combined(s, -1)
        else:
            total[s.key] = have.combined(s, sign)


def by_release(signals: Mapping[Key, ReleaseSignals]) -> dict[str, ReleaseSignals]:
    """All categories of each release added together (category "all")."""
    out: dict[str, ReleaseSignals] = {}
    for (release, _), s in signals.items():
        base = out.get(release) or ReleaseSignals(release=release, category="all")
        out[release] = base.combined(s)
    return out


def view(s: ReleaseSignals | None) -> dict[str, Any]:
    """The figures a person (and a gate) reads from one release's signals."""
    s = s or ReleaseSignals(release="none")
    n = s.count("requests")
    answered = s.count("usage_requests")
    failures = sum(s.count(f"error_{c}") for c in FAILURE_CLASSES)
    hist, ttft = s.hist("latency_ms"), s.hist("ttft_ms")
    # Per answer, not per request: a failed request has no tokens and no cost, and counting it
    # would make a failing canary look cheaper.
    return {
        "requests": n,
        "failures": failures,
        "error_rate": failures / n if n else None,
        "errors": {c: s.count(f"error_{c}") for c in ERROR_CLASSES if s.count(f"error_{c}")},
        "p50_ms": quantile(LATENCY_BOUNDS_MS, hist, 0.5),
        "p95_ms": quantile(LATENCY_BOUNDS_MS, hist, 0.95),
        "ttft_p50_ms": quantile(LATENCY_BOUNDS_MS, ttft, 0.5),
        "ttft_p95_ms": quantile(LATENCY_BOUNDS_MS, ttft, 0.95),
        "answers": answered,
        "tokens_per_answer": s.count("tokens_out") / answered if answered else None,
        "tokens_per_request": (s.count("tokens_in") + s.count("tokens_out")) / answered
        if answered
        else None,
        "cost_per_request": s.total("cost_usd") / answered if answered else None,
        "violations": s.count("violations"),
        "violation_rate": s.count("violations") / n if n else None,
        "refusal_rate": s.count("refusals") / answered if answered else None,
        "empty_rate": s.count("empty") / answered if answered else None,
        "estimated_answers": s.count("estimated"),
        "budget_rejections": s.count("budget_rejections"),
        "tool_calls": dict(s.tools),
    }
