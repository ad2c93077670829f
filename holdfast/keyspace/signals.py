"""Functional-health signals of one release x query category, as carried by a health snapshot.

Everything is a count, a sum or a fixed-bucket histogram, never an average, so that signals
from many sidecars add up and the difference of two snapshots of one sidecar is the traffic
between them. Decoding is tolerant: unknown counters and histograms are ignored (a newer sidecar
may send more), a histogram whose bucket count does not match ours is dropped. The spread of
whole agent sessions is ``holdfast.keyspace.session_spread``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Self

from holdfast.keyspace import fields
from holdfast.keyspace.categories import DEFAULT_CATEGORY, MAX_CATEGORIES, OTHER
from holdfast.keyspace.codec import RecordError
from holdfast.keyspace.fields import check_name

# Upper bounds of the histogram buckets; a last, open bucket holds everything above.
LATENCY_BOUNDS_MS: Final = (25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000)
LENGTH_BOUNDS_TOKENS: Final = (1, 8, 32, 128, 512, 2048)
HISTOGRAMS: Final[Mapping[str, tuple[int, ...]]] = {
    "latency_ms": LATENCY_BOUNDS_MS,
    "ttft_ms": LATENCY_BOUNDS_MS,
    "length_tokens": LENGTH_BOUNDS_TOKENS,
}
ERROR_CLASSES: Final = ("refused", "upstream_4xx", "upstream_5xx", "timeout", "unreachable",
                        "disconnected")  # fmt: skip
COUNTERS: Final = (
    "requests",
    *(f"error_{c}" for c in ERROR_CLASSES),
    "tokens_in",
    "tokens_out",
    "usage_requests",  # answers whose tokens are known (reported or estimated)
    "estimated",  # of those, streams without usage: completion counted from content deltas
    "empty",
    "refusals",
    "tool_answers",  # answers with at least one tool call
    "violations",  # tool-contract violations
    "budget_rejections",
)
SUMS: Final = ("latency_ms_sum", "cost_usd")
MAX_TOOLS: Final = 32
# Records one snapshot may carry (release x category); a reader refuses more outright.
MAX_SIGNAL_RECORDS: Final = 1024


def bucket_index(bounds: tuple[int, ...], value: float) -> int:
    for i, bound in enumerate(bounds):
        if value <= bound:
            return i
    return len(bounds)


def quantile(bounds: tuple[int, ...], buckets: tuple[int, ...], q: float) -> float | None:
    """The q-quantile estimated from bucket counts (linear inside the bucket), None if empty.

    Values in the open last bucket are reported as its lower bound (a floor, never invented)."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            if i == len(bounds):
                return float(bounds[-1])
            low = 0.0 if i == 0 else float(bounds[i - 1])
            return low + (bounds[i] - low) * max(0.0, rank - seen) / count
        seen += count
    return float(bounds[-1])


def add_buckets(a: tuple[int, ...], b: tuple[int, ...], sign: int = 1) -> tuple[int, ...]:
    """Bucket-wise sum (sign=1) or difference (sign=-1) of two histograms with the same bounds."""
    return tuple(x + sign * y for x, y in zip(a, b, strict=True))


def empty_hist(name: str) -> tuple[int, ...]:
    return (0,) * (len(HISTOGRAMS[name]) + 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseSignals:
    """Cumulative signals of one release and one query category."""

    release: str
    category: str = DEFAULT_CATEGORY
    counts: Mapping[str, int] = field(default_factory=dict)
    sums: Mapping[str, float] = field(default_factory=dict)
    hists: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    tools: Mapping[str, int] = field(default_factory=dict)  # tool name -> calls emitted

    def __post_init__(self) -> None:
        check_name(self.release, what="release")
        if not self.category or len(self.category) > 64:
            raise RecordError("signal category must be 1-64 characters")

    @property
    def key(self) -> tuple[str, str]:
        return (self.release, self.category)

    def count(self, name: str) -> int:
        return self.counts.get(name, 0)

    def total(self, name: str) -> float:
        return self.sums.get(name, 0.0)

    def hist(self, name: str) -> tuple[int, ...]:
        return self.hists.get(name) or empty_hist(name)

    @property
    def errors(self) -> int:
        return sum(self.count(f"error_{c}") for c in ERROR_CLASSES)

    def combined(self, other: ReleaseSignals, sign: int = 1) -> ReleaseSignals:
        """The sum (sign=1) or difference (sign=-1) of two records of the same key."""
        counts = {n: self.count(n) + sign * other.count(n) for n in COUNTERS}
        sums = {n: self.total(n) + sign * other.total(n) for n in SUMS}
        hists = {n: add_buckets(self.hist(n), other.hist(n), sign) for n in HISTOGRAMS}
        tools = dict(self.tools)
        for name, calls in other.tools.items():
            tools[name] = tools.get(name, 0) + sign * calls
        return ReleaseSignals(
            release=self.release,
            category=self.category,
            counts={k: v for k, v in counts.items() if v},
            sums={k: v for k, v in sums.items() if v},
            hists={k: v for k, v in hists.items() if any(v)},
            tools={k: v for k, v in tools.items() if v},
        )

    def regressed_from(self, earlier: ReleaseSignals) -> bool:
        """True when a counter went down: the sidecar restarted and counts from zero again."""
        if any(self.count(n) < earlier.count(n) for n in COUNTERS):
            return True
        return any(
            a < b for n in HISTOGRAMS for a, b in zip(self.hist(n), earlier.hist(n), strict=True)
        )

    def to_map(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "category": self.category,
            "counts": {k: v for k, v in self.counts.items() if v},
            "sums": {k: v for k, v in self.sums.items() if v},
            "hists": {k: list(v) for k, v in self.hists.items() if any(v)},
            "tools": dict(self.tools),
        }

    @classmethod
    def from_map(cls, f: dict[str, Any]) -> Self:
        counts = _numbers(f, "counts", int)
        sums = _numbers(f, "sums", float)
        hists: dict[str, tuple[int, ...]] = {}
        raw = fields.submap(f, "hists") or {}
        for name, bounds in HISTOGRAMS.items():
            buckets = raw.get(name)
            if (
                isinstance(buckets, list)
                and len(buckets) == len(bounds) + 1
                and all(type(b) is int and b >= 0 for b in buckets)
            ):
                hists[name] = tuple(buckets)
        tools = _numbers(f, "tools", int)
        return cls(
            release=fields.name(f, "release"),
            category=fields.text(f, "category"),
            counts={k: int(v) for k, v in counts.items() if k in COUNTERS},
            sums={k: float(v) for k, v in sums.items() if k in SUMS},
            hists=hists,
            tools={k[:64]: int(v) for k, v in list(tools.items())[:MAX_TOOLS]},
        )


def _numbers(f: dict[str, Any], name: str, kind: type) -> dict[str, float]:
    raw = fields.submap(f, name) or {}
    out: dict[str, float] = {}
    for key, value in raw.items():
        if not isinstance(key, str) or isinstance(value, bool):
            raise RecordError(f"field {name!r} must map names to numbers")
        if kind is int and type(value) is not int:
            raise RecordError(f"{name}.{key:.40} must be an integer")
        if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise RecordError(f"{name}.{key:.40} must be a non-negative finite number")
        out[key] = value
    return out


def decode_signals(raw: list[dict[str, Any]]) -> tuple[ReleaseSignals, ...]:
    """A snapshot's signal records, with at most ``MAX_CATEGORIES`` categories per release kept
    apart (further ones are added into ``other``, as the sidecar itself does)."""
    if len(raw) > MAX_SIGNAL_RECORDS:
        raise RecordError(f"a snapshot carries at most {MAX_SIGNAL_RECORDS} signal records")
    return cap_categories(ReleaseSignals.from_map(m) for m in raw)


def cap_categories(signals: Iterable[ReleaseSignals]) -> tuple[ReleaseSignals, ...]:
    kept: dict[tuple[str, str], ReleaseSignals] = {}
    seen: dict[str, set[str]] = {}
    for s in signals:
        cats = seen.setdefault(s.release, set())
        key = s.key
        if s.category not in cats and s.category != OTHER and len(cats) >= MAX_CATEGORIES:
            key = (s.release, OTHER)
            s = ReleaseSignals(release=s.release, category=OTHER).combined(s)
        elif s.category != OTHER:
            cats.add(s.category)
        have = kept.get(key)
        kept[key] = s if have is None else have.combined(s)
    return tuple(kept.values())
