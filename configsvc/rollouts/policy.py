"""Strict parsing of a rollout's ``policy`` object (JSON) into a ``HealthPolicy``.

``{"max_error_rate_delta": 0.05, "max_p95_ratio": 1.5, "min_samples": 50, "fails_to_abort": 3,
"inconclusive_after": "10m", ...}``; unknown fields are refused by name; ``{}`` means the
defaults (error-rate delta 0.05 and p95 ratio 1.5, 50 samples, 3 fails).
"""

from __future__ import annotations

from typing import Any, Final

from configsvc.errors import InvalidRequest
from configsvc.rollouts import plan as rollout_plan
from holdfast.keyspace import RecordError
from holdfast.keyspace.policy import THRESHOLDS, HealthPolicy

POLICY_FIELDS: Final = frozenset(
    {
        *THRESHOLDS,
        "min_samples",
        "fails_to_abort",
        "inconclusive_after",
        "window",
        "migrate_on_abort",
    }
)


def _number(obj: dict[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"policy.{key} must be a number", param=f"policy.{key}")
    return float(value)


def _seconds(obj: dict[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip() in ("0", "0s"):
            return 0.0
        return rollout_plan.parse_interval(value)
    return _number(obj, key)


def _integer(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"policy.{key} must be an integer", param=f"policy.{key}")
    return value


def parse_policy(raw: Any) -> HealthPolicy | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidRequest("field 'policy' must be an object", param="policy")
    unknown = sorted(set(raw) - POLICY_FIELDS)
    if unknown:
        raise InvalidRequest(
            f"unknown policy field {unknown[0]!r:.60}; known: {', '.join(sorted(POLICY_FIELDS))}",
            param=f"policy.{unknown[0]:.60}",
        )
    given: dict[str, Any] = {}
    for key in THRESHOLDS:
        if key in raw:
            given[key] = _number(raw, key)  # null switches a default threshold off
    for key in ("min_samples", "fails_to_abort"):
        if (value := _integer(raw, key)) is not None:
            given[key] = value
    if (after := _seconds(raw, "inconclusive_after")) is not None:
        given["inconclusive_after_s"] = after
    if (window := _seconds(raw, "window")) is not None:
        given["window_s"] = window
    if "migrate_on_abort" in raw:
        if not isinstance(raw["migrate_on_abort"], bool):
            raise InvalidRequest(
                "policy.migrate_on_abort must be true or false", param="policy.migrate_on_abort"
            )
        given["migrate_on_abort"] = raw["migrate_on_abort"]
    try:
        return HealthPolicy(**given)
    except RecordError as exc:
        raise InvalidRequest(f"policy: {exc}", param="policy") from exc
