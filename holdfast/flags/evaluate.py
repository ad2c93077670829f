"""Evaluate one flag for one evaluation context: value, variant, reason, error code.

Pure and deterministic: the same flag and context give the same answer in every sidecar and
after every restart (``now`` only feeds ``$flagd.timestamp``). Reasons and error codes are
OpenFeature's; STALE is added by the sidecar, which alone knows how fresh its config is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from json_logic import jsonLogic

from holdfast.flags.custom_ops import FLAGD_PROPERTIES, TARGETING_KEY
from holdfast.flags.definition import FlagSpec
from holdfast.flags.rules import OPERATIONS

Reason = Literal["STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "DEFAULT", "ERROR", "STALE"]
ErrorCode = Literal[
    "FLAG_NOT_FOUND",
    "PARSE_ERROR",
    "TYPE_MISMATCH",
    "TARGETING_KEY_MISSING",
    "INVALID_CONTEXT",
    "GENERAL",
]
SPLIT_OPERATION: Final = "fractional"


@dataclass(frozen=True, slots=True)
class Evaluation:
    """``variant`` None with no error: the flag has no default variant -- use the code default."""

    key: str
    reason: Reason
    value: Any = None
    variant: str | None = None
    error_code: ErrorCode | None = None
    error_details: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.error_code is not None


def not_found(key: str) -> Evaluation:
    return Evaluation(
        key, "ERROR", error_code="FLAG_NOT_FOUND", error_details=f"flag {key!r:.130} is not defined"
    )


def variant_key(result: Any) -> str | None:
    """How flagd turns a targeting result into a variant name (booleans: "true"/"false")."""
    if isinstance(result, str):
        return result
    if isinstance(result, bool):
        return "true" if result else "false"
    if isinstance(result, int):
        return str(result)
    if isinstance(result, float) and math.isfinite(result):
        return str(int(result)) if result.is_integer() else repr(result)
    return None


class _Recorder:
    """Remembers whether a ``fractional`` split chose the result (reason SPLIT)."""

    def __init__(self) -> None:
        self.split: list[Any] = []

    def fractional(self, data: Any, *args: Any) -> Any:
        chosen = OPERATIONS[SPLIT_OPERATION](data, *args)
        self.split.append(chosen)
        return chosen


def _data(spec: FlagSpec, context: Mapping[str, Any], now: float) -> dict[str, Any]:
    data = dict(context)
    data[FLAGD_PROPERTIES] = {"flagKey": spec.key, "timestamp": int(now)}
    data.setdefault(TARGETING_KEY, None)
    return data


def evaluate(spec: FlagSpec, context: Mapping[str, Any], *, now: float) -> Evaluation:
    meta = spec.metadata
    default = spec.default_variant
    default_value = spec.variants[default] if default is not None else None
    if spec.state == "DISABLED":
        return Evaluation(spec.key, "DISABLED", default_value, default, metadata=meta)
    if not spec.targeting:
        # No default variant: the caller's code default serves, which OpenFeature calls DEFAULT
        # (flagd answers so too); STATIC would claim a value this config does not hold.
        reason: Reason = "STATIC" if default is not None else "DEFAULT"
        return Evaluation(spec.key, reason, default_value, default, metadata=meta)
    recorder = _Recorder()
    operations = {**OPERATIONS, SPLIT_OPERATION: recorder.fractional}
    try:
        result = jsonLogic(dict(spec.targeting), _data(spec, context, now), operations)
    except RecursionError:
        return _error(spec, "GENERAL", "targeting rule recursed too deeply")
    except Exception as exc:  # a rule that breaks at run time (e.g. division by zero)
        return _error(spec, "GENERAL", f"targeting failed: {type(exc).__name__}: {exc}"[:300])
    if result is None:
        return Evaluation(spec.key, "DEFAULT", default_value, default, metadata=meta)
    name = variant_key(result)
    if name is None or name not in spec.variants:
        return _error(
            spec,
            "PARSE_ERROR",
            f"targeting chose {result!r:.60}, which is not a variant of the flag",
        )
    matched: Reason = (
        "SPLIT" if recorder.split and recorder.split[-1] == result else "TARGETING_MATCH"
    )
    return Evaluation(spec.key, matched, spec.variants[name], name, metadata=meta)


def _error(spec: FlagSpec, code: ErrorCode, details: str) -> Evaluation:
    return Evaluation(
        spec.key, "ERROR", error_code=code, error_details=details, metadata=spec.metadata
    )
