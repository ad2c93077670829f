"""A/B experiments: ``experiments/<name>`` (the record) and the route's running experiment.

While an experiment runs, the agent's route carries it (``Route.experiment``): sidecars assign
every new session a variant by sticky hash (namespace ``experiment:<name>``) and pin it to the
variant's release, recording ``<experiment>/<variant>`` in the pin so feedback is attributed to
the variant the session was really served by. A route holds at most one experiment, and an
experiment cannot start while a canary or rollout splits the traffic (and vice versa).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, Self

from holdfast.keyspace import fields
from holdfast.keyspace.codec import RecordError, decode_record, encode_record
from holdfast.keyspace.fields import MAX_TEXT, check_name

MetricType = Literal["rate", "mean"]
METRIC_TYPES: Final[tuple[MetricType, ...]] = ("rate", "mean")
ExperimentState = Literal["running", "stopped"]
MAX_VARIANTS: Final = 8
LABEL_MAX: Final = 32


@dataclass(frozen=True, slots=True)
class Variant:
    label: str
    release: str
    weight: float  # percent of new sessions

    def to_map(self) -> dict[str, Any]:
        return {"label": self.label, "release": self.release, "weight": self.weight}

    @classmethod
    def from_map(cls, f: dict[str, Any]) -> Variant:
        return cls(fields.name(f, "label"), fields.name(f, "release"), fields.number(f, "weight"))


def check_variants(variants: tuple[Variant, ...]) -> tuple[Variant, ...]:
    if not 2 <= len(variants) <= MAX_VARIANTS:
        raise RecordError(f"an experiment has 2 to {MAX_VARIANTS} variants")
    labels = [v.label for v in variants]
    releases = [v.release for v in variants]
    if len(set(labels)) != len(labels):
        raise RecordError("variant labels must be distinct")
    if len(set(releases)) != len(releases):
        raise RecordError("each variant needs its own release (feedback is told apart by it)")
    for v in variants:
        check_name(v.label, what="variant label")
        check_name(v.release, what="variant release")
        if len(v.label) > LABEL_MAX:
            raise RecordError(f"variant labels are at most {LABEL_MAX} characters")
        if not math.isfinite(v.weight) or v.weight <= 0:
            raise RecordError(f"variant {v.label} needs a positive share of sessions")
    if abs(sum(v.weight for v in variants) - 100.0) > 1e-6:
        raise RecordError("variant split must add up to 100")
    return variants


def check_metric(metric: str, metric_type: str) -> None:
    check_name(metric, what="metric name")
    if metric_type not in METRIC_TYPES:
        raise RecordError(f"metric type must be one of {', '.join(METRIC_TYPES)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteExperiment:
    """What sidecars need of a running experiment: who gets which release, what is measured."""

    name: str
    metric: str
    metric_type: MetricType
    variants: tuple[Variant, ...]
    started_at: float

    def __post_init__(self) -> None:
        check_name(self.name, what="experiment name")
        check_metric(self.metric, self.metric_type)
        check_variants(self.variants)

    def variant_of(self, label: str) -> Variant | None:
        return next((v for v in self.variants if v.label == label), None)

    def to_map(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "metric": self.metric,
            "metric_type": self.metric_type,
            "variants": [v.to_map() for v in self.variants],
            "started_at": self.started_at,
        }

    @classmethod
    def from_map(cls, f: dict[str, Any]) -> Self:
        metric_type = fields.text(f, "metric_type")
        if metric_type not in METRIC_TYPES:
            raise RecordError(f"metric type must be one of {', '.join(METRIC_TYPES)}")
        return cls(
            name=fields.name(f, "name"),
            metric=fields.name(f, "metric"),
            metric_type=metric_type,
            variants=tuple(Variant.from_map(m) for m in fields.maps(f, "variants")),
            started_at=fields.number(f, "started_at"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Experiment:
    KIND: ClassVar[str] = "experiment"
    agent: str
    spec: RouteExperiment
    state: ExperimentState = "running"
    started_by: str = ""
    stopped_at: float = 0.0
    stopped_by: str = ""
    winner: str = ""
    reason: str = ""

    def __post_init__(self) -> None:
        check_name(self.agent, what="agent name")
        if self.state not in ("running", "stopped"):
            raise RecordError(f"invalid experiment state {self.state!r:.30}")
        if self.winner and self.spec.variant_of(self.winner) is None:
            raise RecordError(f"winner {self.winner!r:.40} is not a variant")
        if len(self.reason) > MAX_TEXT:
            raise RecordError(f"reason is limited to {MAX_TEXT} characters")

    @property
    def name(self) -> str:
        return self.spec.name

    def public(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            **self.spec.to_map(),
            "state": self.state,
            "started_by": self.started_by,
            "stopped_at": self.stopped_at or None,
            "stopped_by": self.stopped_by or None,
            "winner": self.winner or None,
            "reason": self.reason,
        }

    def encode(self) -> bytes:
        return encode_record(
            self.KIND,
            {
                "agent": self.agent,
                "spec": self.spec.to_map(),
                "state": self.state,
                "started_by": self.started_by,
                "stopped_at": self.stopped_at,
                "stopped_by": self.stopped_by,
                "winner": self.winner,
                "reason": self.reason,
            },
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        f = decode_record(data, kind=cls.KIND)
        spec = fields.submap(f, "spec")
        if spec is None:
            raise RecordError("experiment record needs a 'spec' map")
        state = fields.text(f, "state")
        if state not in ("running", "stopped"):
            raise RecordError(f"invalid experiment state {state!r:.30}")
        return cls(
            agent=fields.name(f, "agent"),
            spec=RouteExperiment.from_map(spec),
            state=state,  # type: ignore[arg-type]  # checked above
            started_by=fields.text(f, "started_by", optional=True),
            stopped_at=fields.optional_number(f, "stopped_at", 0.0),
            stopped_by=fields.text(f, "stopped_by", optional=True),
            winner=fields.name(f, "winner", optional=True),
            reason=fields.text(f, "reason", optional=True),
        )
