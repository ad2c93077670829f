"""A rollout's health policy: when the canary counts as worse than stable, and what then.

Every threshold compares the canary with stable over the same recent window, overall and per
query category. A threshold left at None is not checked. Decoding is tolerant of unknown fields.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final, Self

from holdfast.keyspace import fields
from holdfast.keyspace.codec import RecordError

DEFAULT_MAX_ERROR_RATE_DELTA: Final = 0.05
DEFAULT_MAX_P95_RATIO: Final = 1.5
DEFAULT_MIN_SAMPLES: Final = 50
DEFAULT_FAILS_TO_ABORT: Final = 3
DEFAULT_WINDOW_S: Final = 60.0
# Waiting this long (running time) for enough data pauses the rollout and says why.
DEFAULT_INCONCLUSIVE_AFTER_S: Final = 600.0
MAX_FAILS_TO_ABORT: Final = 100
MAX_DEADLINE_S: Final = 7 * 24 * 3600.0
# threshold name -> (lowest, highest) accepted value
THRESHOLDS: Final = {
    "max_error_rate_delta": (0.0, 1.0),  # canary error rate - stable error rate
    "max_p95_ratio": (1.0, 100.0),  # canary p95 latency / stable p95 latency
    "max_tokens_change": (0.0, 100.0),  # |canary tokens per answer / stable's - 1|
    "max_cost_ratio": (1.0, 100.0),  # canary cost per request / stable's
    "max_violation_rate_delta": (0.0, 1.0),  # contract violations per request
    "min_shadow_similarity": (0.0, 1.0),  # mean similarity of the canary's shadow samples
}


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthPolicy:
    max_error_rate_delta: float | None = DEFAULT_MAX_ERROR_RATE_DELTA
    max_p95_ratio: float | None = DEFAULT_MAX_P95_RATIO
    max_tokens_change: float | None = None
    max_cost_ratio: float | None = None
    max_violation_rate_delta: float | None = None
    min_shadow_similarity: float | None = None
    min_samples: int = DEFAULT_MIN_SAMPLES  # per side, per scope (overall or one category)
    fails_to_abort: int = DEFAULT_FAILS_TO_ABORT  # consecutive failing evaluations
    inconclusive_after_s: float = DEFAULT_INCONCLUSIVE_AFTER_S  # 0: wait for ever (step holds)
    window_s: float = DEFAULT_WINDOW_S
    # The operator's say-so in advance: when the gate aborts, the canary's pinned sessions are
    # migrated to stable too (each told by X-Holdfast-Migrated-From); otherwise they stay.
    migrate_on_abort: bool = False

    def __post_init__(self) -> None:
        for name, (low, high) in THRESHOLDS.items():
            value = getattr(self, name)
            if value is not None and (not math.isfinite(value) or not low <= value <= high):
                raise RecordError(f"{name} must be between {low:g} and {high:g}")
        if not 1 <= self.min_samples <= 1_000_000:
            raise RecordError("min_samples must be between 1 and 1000000")
        if not 1 <= self.fails_to_abort <= MAX_FAILS_TO_ABORT:
            raise RecordError(f"fails_to_abort must be between 1 and {MAX_FAILS_TO_ABORT}")
        if not 0 <= self.inconclusive_after_s <= MAX_DEADLINE_S:
            raise RecordError("inconclusive_after must be between 0 and 7 days")
        if self.window_s not in (60.0, 300.0):
            raise RecordError("the evaluation window is 60 or 300 seconds")

    def thresholds(self) -> dict[str, float]:
        return {n: getattr(self, n) for n in THRESHOLDS if getattr(self, n) is not None}

    def to_map(self) -> dict[str, Any]:
        return {
            **{n: getattr(self, n) for n in THRESHOLDS},
            "min_samples": self.min_samples,
            "fails_to_abort": self.fails_to_abort,
            "inconclusive_after_s": self.inconclusive_after_s,
            "window_s": self.window_s,
            "migrate_on_abort": self.migrate_on_abort,
        }

    @classmethod
    def from_map(cls, f: dict[str, Any]) -> Self:
        values: dict[str, Any] = {}
        for name in THRESHOLDS:
            raw = f.get(name)
            if raw is not None and (isinstance(raw, bool) or not isinstance(raw, int | float)):
                raise RecordError(f"policy field {name!r} must be a number or nil")
            values[name] = None if raw is None else float(raw)
        return cls(
            **values,
            min_samples=fields.integer(f, "min_samples", default=DEFAULT_MIN_SAMPLES),
            fails_to_abort=fields.integer(f, "fails_to_abort", default=DEFAULT_FAILS_TO_ABORT),
            inconclusive_after_s=fields.optional_number(
                f, "inconclusive_after_s", DEFAULT_INCONCLUSIVE_AFTER_S
            ),
            window_s=fields.optional_number(f, "window_s", DEFAULT_WINDOW_S),
            migrate_on_abort=fields.flag(f, "migrate_on_abort"),
        )
