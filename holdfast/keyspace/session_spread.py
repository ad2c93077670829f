"""How a sidecar's tracked multi-step agent sessions of one release spread out, per snapshot.

Fixed-bucket histograms of each session's cumulative tokens and latency plus their sums, so that
spreads from many sidecars add up (``merged``) like the per-request signals in
``holdfast.keyspace.signals``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Self

from holdfast.keyspace import fields
from holdfast.keyspace.codec import RecordError
from holdfast.keyspace.fields import check_name
from holdfast.keyspace.signals import add_buckets, quantile

# Upper bounds of the histogram buckets; a last, open bucket holds everything above.
SESSION_TOKEN_BOUNDS: Final = (100, 1000, 10_000, 100_000, 1_000_000)
SESSION_LATENCY_BOUNDS_MS: Final = (1000, 10_000, 60_000, 300_000, 1_800_000)


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionSpread:
    """How the sessions a sidecar currently tracks for one release stack up (multi-step agents):
    the distribution of each session's cumulative tokens and latency, over the tracked ones."""

    release: str
    sessions: int = 0
    tokens: tuple[int, ...] = (0,) * (len(SESSION_TOKEN_BOUNDS) + 1)
    latency_ms: tuple[int, ...] = (0,) * (len(SESSION_LATENCY_BOUNDS_MS) + 1)
    tokens_sum: int = 0  # over the tracked sessions (0 from sidecars that predate the sums)
    latency_ms_sum: float = 0.0

    def __post_init__(self) -> None:
        check_name(self.release, what="release")
        if self.tokens_sum < 0 or self.latency_ms_sum < 0:
            raise RecordError("session spread sums must not be negative")
        if (
            len(self.tokens) != len(SESSION_TOKEN_BOUNDS) + 1
            or len(self.latency_ms) != len(SESSION_LATENCY_BOUNDS_MS) + 1
        ):
            raise RecordError("session spread has the wrong number of buckets")

    def view(self) -> dict[str, Any]:
        """What a person reads: tracked sessions, and quantiles of their cumulative tokens and
        latency (bucket estimates; the open last bucket reports its lower bound)."""
        n = self.sessions
        return {
            "sessions": n,
            "tokens_mean": self.tokens_sum / n if n and self.tokens_sum else None,
            "latency_ms_mean": self.latency_ms_sum / n if n and self.latency_ms_sum else None,
            "tokens_p50": quantile(SESSION_TOKEN_BOUNDS, self.tokens, 0.5),
            "tokens_p95": quantile(SESSION_TOKEN_BOUNDS, self.tokens, 0.95),
            "latency_ms_p50": quantile(SESSION_LATENCY_BOUNDS_MS, self.latency_ms, 0.5),
            "latency_ms_p95": quantile(SESSION_LATENCY_BOUNDS_MS, self.latency_ms, 0.95),
            "tokens_buckets": dict(zip(_labels(SESSION_TOKEN_BOUNDS), self.tokens, strict=True)),
            "latency_ms_buckets": dict(
                zip(_labels(SESSION_LATENCY_BOUNDS_MS), self.latency_ms, strict=True)
            ),
        }

    def merged(self, other: SessionSpread) -> SessionSpread:
        return SessionSpread(
            release=self.release,
            sessions=self.sessions + other.sessions,
            tokens=add_buckets(self.tokens, other.tokens),
            latency_ms=add_buckets(self.latency_ms, other.latency_ms),
            tokens_sum=self.tokens_sum + other.tokens_sum,
            latency_ms_sum=self.latency_ms_sum + other.latency_ms_sum,
        )

    def to_map(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "sessions": self.sessions,
            "tokens": list(self.tokens),
            "latency_ms": list(self.latency_ms),
            "tokens_sum": self.tokens_sum,
            "latency_ms_sum": self.latency_ms_sum,
        }

    @classmethod
    def from_map(cls, f: dict[str, Any]) -> Self:
        tokens, latency = _counts(f, "tokens"), _counts(f, "latency_ms")
        sessions = fields.integer(f, "sessions", default=0)
        if sessions < 0:
            raise RecordError("session spread sessions is negative")
        return cls(
            release=fields.name(f, "release"),
            sessions=sessions,
            tokens=tokens,
            latency_ms=latency,
            tokens_sum=fields.integer(f, "tokens_sum", default=0),
            latency_ms_sum=fields.finite(f, "latency_ms_sum", 0.0),
        )


def _labels(bounds: tuple[int, ...]) -> list[str]:
    """Bucket names for JSON: "le_<bound>" and "gt_<last bound>"."""
    return [*(f"le_{b}" for b in bounds), f"gt_{bounds[-1]}"]


def _counts(f: dict[str, Any], name: str) -> tuple[int, ...]:
    got = f.get(name)
    if not isinstance(got, list) or not all(type(b) is int and b >= 0 for b in got):
        raise RecordError(f"session spread {name} must be a list of counts")
    return tuple(got)
