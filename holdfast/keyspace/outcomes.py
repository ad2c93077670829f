"""Experiment outcomes: each sidecar's cumulative counts, durable in etcd.

A sidecar writes ``outcomes/<sidecar-id>/<experiment>`` (no lease) every health interval while
its counts change, read-modify-write under compare-and-swap: a restarted sidecar with the same
id continues from what the key holds (see sidecar.outcome_publisher). The key outlives the
sidecar; ``experiment report`` merges every key. ``m2`` (sum of squared deviations) is the
precise spread; ``sum_sq`` stays for readers from before it was added.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Self

from holdfast.keyspace import fields
from holdfast.keyspace.codec import RecordError, decode_record, encode_record
from holdfast.keyspace.fields import check_name
from holdfast.keyspace.keys import ID_RE

MAX_OUTCOMES: Final = 256


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeCounts:
    """One sidecar's cumulative outcome counts of one (experiment, variant, metric)."""

    experiment: str
    variant: str
    metric: str
    n: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    m2: float | None = None  # None: a record written before m2 existed

    def __post_init__(self) -> None:
        check_name(self.experiment, what="experiment name")
        check_name(self.variant, what="variant label")
        check_name(self.metric, what="metric name")
        numbers = (self.total, self.total_sq, 0.0 if self.m2 is None else self.m2)
        if self.n < 0 or not all(math.isfinite(v) for v in numbers):
            raise RecordError("outcome counts must be finite and n >= 0")
        if self.m2 is not None and self.m2 < 0:
            raise RecordError("outcome m2 must be >= 0")

    def to_map(self) -> dict[str, Any]:
        return {
            "experiment": self.experiment,
            "variant": self.variant,
            "metric": self.metric,
            "n": self.n,
            "sum": self.total,
            "sum_sq": self.total_sq,
            **({} if self.m2 is None else {"m2": self.m2}),
        }

    @classmethod
    def from_map(cls, f: dict[str, Any]) -> Self:
        return cls(
            experiment=fields.name(f, "experiment"),
            variant=fields.name(f, "variant"),
            metric=fields.name(f, "metric"),
            n=fields.integer(f, "n"),
            total=fields.number(f, "sum"),
            total_sq=fields.number(f, "sum_sq"),
            m2=fields.number(f, "m2") if f.get("m2") is not None else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeReport:
    """One sidecar's counts of one experiment, as of ``at``."""

    KIND: ClassVar[str] = "outcomes"
    experiment: str
    sidecar_id: str
    at: float
    counts: tuple[OutcomeCounts, ...] = ()

    def __post_init__(self) -> None:
        check_name(self.experiment, what="experiment name")
        if not ID_RE.fullmatch(self.sidecar_id):
            raise RecordError(f"invalid sidecar id {self.sidecar_id!r:.140}")
        if len(self.counts) > MAX_OUTCOMES:
            raise RecordError(f"at most {MAX_OUTCOMES} outcome counts per report")
        if any(c.experiment != self.experiment for c in self.counts):
            raise RecordError("every count of a report belongs to its experiment")

    def encode(self) -> bytes:
        return encode_record(
            self.KIND,
            {
                "experiment": self.experiment,
                "sidecar_id": self.sidecar_id,
                "at": self.at,
                "counts": [c.to_map() for c in self.counts],
            },
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        f = decode_record(data, kind=cls.KIND)
        return cls(
            experiment=fields.name(f, "experiment"),
            sidecar_id=fields.text(f, "sidecar_id"),
            at=fields.number(f, "at"),
            counts=tuple(OutcomeCounts.from_map(m) for m in fields.maps(f, "counts")),
        )
