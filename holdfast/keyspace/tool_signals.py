"""Tool-contract signals of one release x tool, as carried by a sidecar's health snapshot.

Counts, sums and one latency histogram, all cumulative since the sidecar started, so they add
up across sidecars and the difference of two snapshots of one sidecar is the traffic between
them (the same rules as ``holdfast.keyspace.signals``). Counter names:

- ``calls``: calls through ``POST /tools/{tool}``; ``outcome_<o>``: those that did not end
  ``ok`` (timeout, unreachable, backend_error, invalid_result, circuit_open...);
- ``violation_<kind>``: contract violations by kind (declared, call, args, result), from chat
  exchanges and tool calls alike;
- ``unavailable``: requests whose release pins a version this sidecar does not hold.

Decoding is tolerant of names it does not know (a newer sidecar may send more) and strict on
types; a snapshot carries at most ``MAX_TOOL_SIGNALS`` of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Self

from holdfast.keyspace import fields
from holdfast.keyspace.codec import RecordError
from holdfast.keyspace.fields import check_name
from holdfast.keyspace.signals import LATENCY_BOUNDS_MS

MAX_TOOL_SIGNALS: Final = 256
COUNTER_RE: Final = re.compile(r"^(calls|unavailable|(outcome|violation)_[a-z_]{1,32})$")
ERROR_PREFIX: Final = "outcome_"
VIOLATION_PREFIX: Final = "violation_"
HIST_LEN: Final = len(LATENCY_BOUNDS_MS) + 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolSignals:
    release: str
    tool: str
    version: str = ""  # the version last seen for this release and tool
    counts: Mapping[str, int] = field(default_factory=dict)
    latency_ms_sum: float = 0.0
    latency_ms: tuple[int, ...] = (0,) * HIST_LEN

    def __post_init__(self) -> None:
        check_name(self.release, what="release")
        check_name(self.tool, what="tool")
        if len(self.latency_ms) != HIST_LEN:
            raise RecordError("tool latency histogram has the wrong number of buckets")

    @property
    def key(self) -> tuple[str, str]:
        return (self.release, self.tool)

    def count(self, name: str) -> int:
        return self.counts.get(name, 0)

    @property
    def errors(self) -> int:
        return sum(v for k, v in self.counts.items() if k.startswith(ERROR_PREFIX))

    @property
    def violations(self) -> int:
        return sum(v for k, v in self.counts.items() if k.startswith(VIOLATION_PREFIX))

    def combined(self, other: ToolSignals, sign: int = 1) -> ToolSignals:
        """The sum (sign=1) or difference (sign=-1) of two records of the same key."""
        counts = dict(self.counts)
        for name, n in other.counts.items():
            counts[name] = counts.get(name, 0) + sign * n
        return ToolSignals(
            release=self.release,
            tool=self.tool,
            version=(other.version if sign == 1 else self.version) or self.version,
            counts={k: v for k, v in counts.items() if v},
            latency_ms_sum=self.latency_ms_sum + sign * other.latency_ms_sum,
            latency_ms=tuple(
                a + sign * b for a, b in zip(self.latency_ms, other.latency_ms, strict=True)
            ),
        )

    def to_map(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "tool": self.tool,
            "version": self.version,
            "counts": {k: v for k, v in self.counts.items() if v},
            "latency_ms_sum": self.latency_ms_sum,
            "latency_ms": list(self.latency_ms),
        }

    @classmethod
    def from_map(cls, f: dict[str, Any]) -> Self:
        counts: dict[str, int] = {}
        for name, value in (fields.submap(f, "counts") or {}).items():
            if not isinstance(name, str) or type(value) is not int or value < 0:
                raise RecordError("tool signal counts must map names to non-negative integers")
            if COUNTER_RE.fullmatch(name):
                counts[name] = value
        hist = f.get("latency_ms")
        if not (
            isinstance(hist, list)
            and len(hist) == HIST_LEN
            and all(type(b) is int and b >= 0 for b in hist)
        ):
            hist = [0] * HIST_LEN
        return cls(
            release=fields.name(f, "release"),
            tool=fields.name(f, "tool"),
            version=fields.text(f, "version", optional=True)[:32],
            counts=counts,
            latency_ms_sum=fields.finite(f, "latency_ms_sum", 0.0),
            latency_ms=tuple(hist),
        )


def decode_all(raw: Iterable[dict[str, Any]]) -> tuple[ToolSignals, ...]:
    return tuple(ToolSignals.from_map(m) for m in list(raw)[:MAX_TOOL_SIGNALS])
