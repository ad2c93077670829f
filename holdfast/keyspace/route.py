"""The route of one agent: stable, canary, shadow and the progressive-rollout plan.

One record per agent so that every change of where new sessions go is one compare-and-swap
on one key, and a sidecar sees a consistent combination of all of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, Self

from holdfast.keyspace import fields
from holdfast.keyspace.categories import CategoryRule, decode_rules
from holdfast.keyspace.codec import RecordError, decode_record, encode_record
from holdfast.keyspace.experiment import RouteExperiment
from holdfast.keyspace.fields import check_name
from holdfast.keyspace.fields import percent as check_percent
from holdfast.keyspace.keys import FLAG_KEY_RE
from holdfast.keyspace.policy import HealthPolicy
from holdfast.keyspace.records import validate_model

RolloutState = Literal["running", "paused", "done", "aborted"]
ROLLOUT_STATES: Final = ("running", "paused", "done", "aborted")
MAX_ROLLOUT_STEPS: Final = 20
MIN_ROLLOUT_INTERVAL_S: Final = 1.0
MAX_ROLLOUT_INTERVAL_S: Final = 7 * 24 * 3600.0
DEFAULT_MIN_SAMPLES: Final = 50
DEFAULT_MIN_SIMILARITY: Final = 0.8
DEFAULT_MIN_AGREEMENT: Final = 0.9


@dataclass(frozen=True, slots=True, kw_only=True)
class Shadow:
    """Mirror ``percent`` of requests to ``release``; ``since`` names this shadow's epoch so that
    comparisons from an earlier shadow of the same release are never mixed in."""

    release: str
    percent: float
    since: float
    min_samples: int = DEFAULT_MIN_SAMPLES
    min_similarity: float = DEFAULT_MIN_SIMILARITY
    min_agreement: float = DEFAULT_MIN_AGREEMENT

    def __post_init__(self) -> None:
        check_name(self.release, what="shadow release")
        check_percent(self.percent, what="shadow percent")
        if self.min_samples < 1:
            raise RecordError("shadow min_samples must be at least 1")
        for what, value in (("similarity", self.min_similarity), ("agreement", self.min_agreement)):
            if not 0.0 <= value <= 1.0:
                raise RecordError(f"shadow min_{what} must be between 0 and 1")

    def to_map(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "percent": self.percent,
            "since": self.since,
            "min_samples": self.min_samples,
            "min_similarity": self.min_similarity,
            "min_agreement": self.min_agreement,
        }

    @classmethod
    def from_map(cls, f: dict[str, Any]) -> Self:
        return cls(
            release=fields.name(f, "release"),
            percent=fields.number(f, "percent"),
            since=fields.number(f, "since"),
            min_samples=fields.integer(f, "min_samples", default=DEFAULT_MIN_SAMPLES),
            min_similarity=fields.optional_number(f, "min_similarity", DEFAULT_MIN_SIMILARITY),
            min_agreement=fields.optional_number(f, "min_agreement", DEFAULT_MIN_AGREEMENT),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Rollout:
    """A progressive rollout: the canary follows ``steps`` (percent), one step per interval.

    ``step_started_at`` is when the current step began; a paused rollout keeps in ``elapsed``
    how far into the step it was, so resuming neither skips nor repeats time.
    """

    release: str
    steps: tuple[float, ...]
    interval_s: float
    step: int = 0
    state: RolloutState = "running"
    started_at: float = 0.0
    started_by: str = ""
    step_started_at: float = 0.0
    elapsed: float = 0.0
    ended_at: float = 0.0
    reason: str = ""
    policy: HealthPolicy | None = None  # None: time alone advances the plan

    def __post_init__(self) -> None:
        check_name(self.release, what="rollout release")
        if not 1 <= len(self.steps) <= MAX_ROLLOUT_STEPS:
            raise RecordError(f"a rollout has 1 to {MAX_ROLLOUT_STEPS} steps")
        previous = 0.0
        for value in self.steps:
            check_percent(value, what="rollout step")
            if value <= previous:
                raise RecordError("rollout steps must be increasing and above 0")
            previous = value
        if not MIN_ROLLOUT_INTERVAL_S <= self.interval_s <= MAX_ROLLOUT_INTERVAL_S:
            raise RecordError(
                f"rollout interval must be between {MIN_ROLLOUT_INTERVAL_S:g}s and "
                f"{MAX_ROLLOUT_INTERVAL_S:g}s"
            )
        if not 0 <= self.step < len(self.steps):
            raise RecordError(f"rollout step {self.step} is outside the plan")
        if self.state not in ROLLOUT_STATES:
            raise RecordError(f"unknown rollout state {self.state!r:.30}")

    @property
    def active(self) -> bool:
        return self.state in ("running", "paused")

    @property
    def percent(self) -> float:
        return self.steps[self.step]

    def to_map(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "steps": list(self.steps),
            "interval_s": self.interval_s,
            "step": self.step,
            "state": self.state,
            "started_at": self.started_at,
            "started_by": self.started_by,
            "step_started_at": self.step_started_at,
            "elapsed": self.elapsed,
            "ended_at": self.ended_at,
            "reason": self.reason,
            "policy": self.policy.to_map() if self.policy else None,
        }

    @classmethod
    def from_map(cls, f: dict[str, Any]) -> Self:
        steps = f.get("steps")
        if not isinstance(steps, list) or not all(
            isinstance(s, int | float) and not isinstance(s, bool) for s in steps
        ):
            raise RecordError("field 'steps' must be a list of numbers")
        state = fields.text(f, "state")
        policy = fields.submap(f, "policy")
        if state not in ROLLOUT_STATES:
            raise RecordError(f"unknown rollout state {state!r:.30}")
        return cls(
            release=fields.name(f, "release"),
            steps=tuple(float(s) for s in steps),
            interval_s=fields.number(f, "interval_s"),
            step=fields.integer(f, "step"),
            state=state,  # type: ignore[arg-type]  # checked against ROLLOUT_STATES above
            started_at=fields.optional_number(f, "started_at", 0.0),
            started_by=fields.text(f, "started_by", optional=True),
            step_started_at=fields.optional_number(f, "step_started_at", 0.0),
            elapsed=fields.optional_number(f, "elapsed", 0.0),
            ended_at=fields.optional_number(f, "ended_at", 0.0),
            reason=fields.text(f, "reason", optional=True),
            policy=HealthPolicy.from_map(policy) if policy is not None else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """Where an agent's new sessions go. Pinned sessions ignore it (see ``Pin``)."""

    KIND: ClassVar[str] = "route"
    agent: str
    stable: str
    previous_stable: str = ""
    aliases: tuple[str, ...] = ()
    canary: str = ""
    canary_percent: float = 0.0
    shadow: Shadow | None = None
    rollout: Rollout | None = None
    updated_at: float = 0.0
    updated_by: str = ""
    flag: str = ""  # a string flag whose variant value names the release of a new session
    experiment: RouteExperiment | None = None  # a running A/B experiment assigns new sessions
    # Categorise requests without X-Holdfast-Category: first match wins (records ignore it if old).
    categories: tuple[CategoryRule, ...] = ()

    def __post_init__(self) -> None:
        if self.flag and not FLAG_KEY_RE.fullmatch(self.flag):
            raise RecordError(f"invalid route flag key {self.flag!r:.140}")
        check_name(self.agent, what="agent name")
        check_name(self.stable, what="stable release")
        check_name(self.previous_stable, what="previous release", optional=True)
        check_name(self.canary, what="canary release", optional=True)
        check_percent(self.canary_percent, what="canary percent")
        if self.canary_percent and not self.canary:
            raise RecordError("a canary percent needs a canary release")
        for alias in self.aliases:
            validate_model(alias)

    def encode(self) -> bytes:
        return encode_record(
            self.KIND,
            {
                "agent": self.agent,
                "stable": self.stable,
                "previous_stable": self.previous_stable,
                "aliases": list(self.aliases),
                "canary": self.canary,
                "canary_percent": self.canary_percent,
                "shadow": self.shadow.to_map() if self.shadow else None,
                "rollout": self.rollout.to_map() if self.rollout else None,
                "updated_at": self.updated_at,
                "updated_by": self.updated_by,
                "flag": self.flag,
                "experiment": self.experiment.to_map() if self.experiment else None,
                "categories": [r.to_map() for r in self.categories],
            },
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        f = decode_record(data, kind=cls.KIND)
        aliases = f.get("aliases", [])
        if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise RecordError("field 'aliases' must be a list of strings")
        shadow, rollout = fields.submap(f, "shadow"), fields.submap(f, "rollout")
        experiment = fields.submap(f, "experiment")
        return cls(
            agent=fields.name(f, "agent"),
            stable=fields.name(f, "stable"),
            previous_stable=fields.name(f, "previous_stable", optional=True),
            aliases=tuple(aliases),
            canary=fields.name(f, "canary", optional=True),
            canary_percent=fields.optional_number(f, "canary_percent", 0.0),
            shadow=Shadow.from_map(shadow) if shadow is not None else None,
            rollout=Rollout.from_map(rollout) if rollout is not None else None,
            updated_at=fields.number(f, "updated_at"),
            updated_by=fields.text(f, "updated_by", optional=True),
            flag=fields.text(f, "flag", optional=True),
            experiment=RouteExperiment.from_map(experiment) if experiment is not None else None,
            categories=decode_rules(fields.maps(f, "categories")),
        )

    def public(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "stable": self.stable,
            "previous_stable": self.previous_stable or None,
            "aliases": list(self.aliases),
            "canary": self.canary or None,
            "canary_percent": self.canary_percent,
            "shadow": self.shadow.to_map() if self.shadow else None,
            "rollout": self.rollout.to_map() if self.rollout else None,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
            "flag": self.flag or None,
            "experiment": self.experiment.to_map() if self.experiment else None,
            "categories": [r.to_map() for r in self.categories],
        }
