"""A sidecar's health snapshot, published under its lease; configsvc aggregates them.

Counters are cumulative since the sidecar started, so a reader can sum snapshots across
sidecars without double counting and a lost snapshot loses nothing but freshness.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from holdfast.keyspace import fields
from holdfast.keyspace.codec import RecordError, decode_record, encode_record
from holdfast.keyspace.drift import McpDrift, decode_drifts
from holdfast.keyspace.fields import check_name
from holdfast.keyspace.keys import ID_RE
from holdfast.keyspace.session_spread import SessionSpread
from holdfast.keyspace.signals import MAX_SIGNAL_RECORDS, ReleaseSignals, decode_signals
from holdfast.keyspace.tool_signals import ToolSignals, decode_all

_SHADOW_COUNTERS = (
    "samples",
    "tool_agree",
    "tool_samples",
    "token_samples",
    "primary_prompt_tokens",
    "primary_completion_tokens",
    "shadow_prompt_tokens",
    "shadow_completion_tokens",
    "shadow_errors",
    "skipped",
)
_SHADOW_SUMS = ("similarity_sum", "primary_latency_ms_sum", "shadow_latency_ms_sum")
MAX_SHADOW_STATS = 64  # a sidecar keeps as many (sidecar.shadow_book.MAX_ENTRIES)


@dataclass(frozen=True, slots=True, kw_only=True)
class ShadowStats:
    """Comparisons of one primary release against one shadow release, in one shadow epoch."""

    primary: str
    shadow: str
    epoch: float
    samples: int = 0
    similarity_sum: float = 0.0
    similarity_min: float = 1.0
    tool_agree: int = 0
    tool_samples: int = 0
    # Samples where both answers reported usage (a stream without include_usage does not):
    # the token sums cover only those.
    token_samples: int = 0
    primary_prompt_tokens: int = 0
    primary_completion_tokens: int = 0
    shadow_prompt_tokens: int = 0
    shadow_completion_tokens: int = 0
    primary_latency_ms_sum: float = 0.0
    shadow_latency_ms_sum: float = 0.0
    shadow_errors: int = 0
    skipped: int = 0

    def __post_init__(self) -> None:
        check_name(self.primary, what="primary release")
        check_name(self.shadow, what="shadow release")
        for name in _SHADOW_COUNTERS:
            if getattr(self, name) < 0:
                raise RecordError(f"shadow counter {name} is negative")
        for name in _SHADOW_SUMS:
            if getattr(self, name) < 0:
                raise RecordError(f"shadow sum {name} is negative")
        if not 0.0 <= self.similarity_min <= 1.0 or self.similarity_sum > self.samples + 1e-6:
            raise RecordError("shadow similarity is outside 0..1")

    def merged(self, other: ShadowStats) -> ShadowStats:
        """The sum of two sidecars' stats for the same (primary, shadow, epoch)."""
        changes: dict[str, Any] = {
            name: getattr(self, name) + getattr(other, name)
            for name in (*_SHADOW_COUNTERS, *_SHADOW_SUMS)
        }
        changes["similarity_min"] = min(self.similarity_min, other.similarity_min)
        return dataclasses.replace(self, **changes)

    def to_map(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_map(cls, f: dict[str, Any]) -> Self:
        values: dict[str, Any] = {n: fields.integer(f, n, default=0) for n in _SHADOW_COUNTERS}
        values.update({n: fields.finite(f, n, 0.0) for n in _SHADOW_SUMS})
        return cls(
            primary=fields.name(f, "primary"),
            shadow=fields.name(f, "shadow"),
            epoch=fields.finite(f, "epoch"),
            similarity_min=fields.finite(f, "similarity_min", 1.0),
            **values,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthSnapshot:
    KIND: ClassVar[str] = "health"
    sidecar_id: str
    agent: str
    at: float
    started_at: float
    config_revision: int
    pins_cached: int = 0
    pins_pending: int = 0
    shadow: tuple[ShadowStats, ...] = ()
    # Functional health per release x category, and the spread of sessions' cumulative spend.
    signals: tuple[ReleaseSignals, ...] = ()
    sessions: tuple[SessionSpread, ...] = ()
    # Tool-contract violations, tool calls, errors and latency per release x tool.
    tools: tuple[ToolSignals, ...] = ()
    # MCP backends whose live tools/list drifted from a pinned contract (the most recent ones).
    mcp_drift: tuple[McpDrift, ...] = ()

    def __post_init__(self) -> None:
        if not ID_RE.fullmatch(self.sidecar_id):
            raise RecordError(f"invalid sidecar id {self.sidecar_id!r:.140}")
        check_name(self.agent, what="agent name")

    def encode(self) -> bytes:
        return encode_record(
            self.KIND,
            {
                "sidecar_id": self.sidecar_id,
                "agent": self.agent,
                "at": self.at,
                "started_at": self.started_at,
                "config_revision": self.config_revision,
                "pins_cached": self.pins_cached,
                "pins_pending": self.pins_pending,
                "shadow": [s.to_map() for s in self.shadow],
                "signals": [s.to_map() for s in self.signals],
                "sessions": [s.to_map() for s in self.sessions],
                "tools": [t.to_map() for t in self.tools],
                "mcp_drift": [d.to_map() for d in self.mcp_drift],
            },
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        f = decode_record(data, kind=cls.KIND)
        return cls(
            sidecar_id=fields.text(f, "sidecar_id"),
            agent=fields.name(f, "agent"),
            at=fields.finite(f, "at"),
            started_at=fields.finite(f, "started_at"),
            config_revision=fields.integer(f, "config_revision"),
            pins_cached=fields.integer(f, "pins_cached", default=0),
            pins_pending=fields.integer(f, "pins_pending", default=0),
            shadow=tuple(ShadowStats.from_map(m) for m in _capped(f, "shadow", MAX_SHADOW_STATS)),
            signals=decode_signals(fields.maps(f, "signals")),
            sessions=tuple(
                SessionSpread.from_map(m) for m in _capped(f, "sessions", MAX_SIGNAL_RECORDS)
            ),
            tools=decode_all(fields.maps(f, "tools")),
            mcp_drift=decode_drifts(fields.maps(f, "mcp_drift")),
        )


def _capped(f: dict[str, Any], name: str, most: int) -> list[dict[str, Any]]:
    found = fields.maps(f, name)
    if len(found) > most:
        raise RecordError(f"a snapshot carries at most {most} {name} records")
    return found
