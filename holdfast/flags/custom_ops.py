"""flagd's custom JsonLogic operations: ``fractional``, ``sem_ver``, ``starts_with``,
``ends_with``, with flagd's semantics (its Go evaluator is the reference).

Each operation receives the evaluation data and its already-evaluated arguments, and returns
None when its arguments are unusable: JsonLogic then treats the rule as not matching, which
is what flagd does. ``fractional`` buckets exactly as flagd: murmur3 (32-bit, seed 0) of the
bucketing string -- by default ``flagKey + targetingKey`` -- scaled to the summed weights with
``(hash * total) >> 32``, so a user lands in the same variant under Holdfast and flagd.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import mmh3
import semver

MAX_WEIGHT_SUM: Final = 2**31 - 1
FLAGD_PROPERTIES: Final = "$flagd"
TARGETING_KEY: Final = "targetingKey"
SEM_VER_OPS: Final = frozenset({"=", "!=", "<", "<=", ">", ">=", "^", "~"})


def bucket(hash_input: str, weights: Sequence[int]) -> int:
    """The index of the weight range that ``hash_input`` falls into (weights sum > 0)."""
    total = sum(weights)
    value = mmh3.hash(hash_input.encode("utf-8"), 0, signed=False)
    point = (value * total) >> 32
    end = 0
    for index, weight in enumerate(weights):
        end += weight
        if point < end:
            return index
    return len(weights) - 1  # unreachable: point < total


def _weight(entry: list[Any]) -> int | None:
    if len(entry) < 2 or entry[1] is None:
        return 1
    raw = entry[1]
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    if isinstance(raw, float) and not raw.is_integer():
        return None
    weight = int(raw)
    if weight > MAX_WEIGHT_SUM:
        return None
    return max(0, weight)  # as flagd >= 0.15: a computed negative weight (a rollout) counts 0


def fractional(data: Any, *args: Any) -> Any:
    """``{"fractional": [bucketBy?, [variant, weight?], ...]}``; None when misconfigured."""
    if not args:
        return None
    first, rest = args[0], list(args[1:])
    if isinstance(first, str):
        bucket_by = first
    else:
        if first is not None:
            rest = list(args)  # no bucketing expression: every argument is a distribution
        key = data.get(TARGETING_KEY) if isinstance(data, dict) else None
        if not isinstance(key, str) or not key:
            return None  # as flagd: no targeting key, no split -- the default variant serves
        props = data.get(FLAGD_PROPERTIES)
        flag_key = props.get("flagKey", "") if isinstance(props, dict) else ""
        bucket_by = f"{flag_key}{key}"
    variants: list[Any] = []
    weights: list[int] = []
    for entry in rest:
        if not isinstance(entry, list) or not entry:
            return None
        variant = entry[0]
        if variant is not None and not isinstance(variant, str | bool | int | float):
            return None
        weight = _weight(entry)
        if weight is None:
            return None
        variants.append(variant)
        weights.append(weight)
    total = sum(weights)
    if not variants or total <= 0 or total > MAX_WEIGHT_SUM:
        return None
    return variants[bucket(bucket_by, weights)]


def _strings(args: tuple[Any, ...]) -> tuple[str, str] | None:
    if len(args) != 2 or not all(isinstance(a, str) for a in args):
        return None
    return args[0], args[1]


def starts_with(data: Any, *args: Any) -> bool | None:
    pair = _strings(args)
    return None if pair is None else pair[0].startswith(pair[1])


def ends_with(data: Any, *args: Any) -> bool | None:
    pair = _strings(args)
    return None if pair is None else pair[0].endswith(pair[1])


def parse_version(value: Any) -> semver.Version | None:
    """A semantic version, with flagd's leniency: a leading v, missing minor/patch as 0."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = str(value).strip()
    if text[:1] in ("v", "V"):
        text = text[1:]
    core, sep, tail = text.partition("-") if "-" in text else text.partition("+")
    parts = core.split(".")
    if not 1 <= len(parts) <= 3:
        return None
    text = ".".join(parts + ["0"] * (3 - len(parts))) + sep + tail
    try:
        return semver.Version.parse(text)
    except (ValueError, TypeError):
        return None


def sem_ver(data: Any, *args: Any) -> bool | None:
    """``{"sem_ver": [version, op, version]}`` with op in = != < <= > >= ^ (major) ~ (minor)."""
    if len(args) != 3 or args[1] not in SEM_VER_OPS:
        return None
    left, op, right = parse_version(args[0]), args[1], parse_version(args[2])
    if left is None or right is None:
        return None
    if op == "^":
        return left.major == right.major
    if op == "~":
        return (left.major, left.minor) == (right.major, right.minor)
    cmp = left.compare(right)
    return {
        "=": cmp == 0,
        "!=": cmp != 0,
        "<": cmp < 0,
        "<=": cmp <= 0,
        ">": cmp > 0,
        ">=": cmp >= 0,
    }[op]
