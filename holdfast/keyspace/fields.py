"""Strict field readers shared by every record type: a wrong type is a RecordError."""

from __future__ import annotations

import math
from typing import Any, Final

from holdfast.keyspace.codec import RecordError
from holdfast.keyspace.keys import NAME_RE

MAX_TEXT: Final = 4096


def text(fields: dict[str, Any], name: str, *, optional: bool = False) -> str:
    value = fields.get(name)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise RecordError(f"field {name!r} must be a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise RecordError(f"field {name!r} is longer than {MAX_TEXT} characters")
    return value


def number(fields: dict[str, Any], name: str) -> float:
    value = fields.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RecordError(f"field {name!r} must be a number")
    return float(value)


def name(fields: dict[str, Any], name: str, *, optional: bool = False) -> str:
    value = text(fields, name, optional=optional)
    if value and not NAME_RE.fullmatch(value):
        raise RecordError(f"field {name!r} is not a valid name: {value!r:.70}")
    if not value and not optional:
        raise RecordError(f"field {name!r} is empty")
    return value


def integer(fields: dict[str, Any], name: str, *, default: int | None = None) -> int:
    value = fields.get(name)
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(f"field {name!r} must be an integer")
    return value


def flag(fields: dict[str, Any], name: str) -> bool:
    value = fields.get(name, False)
    if not isinstance(value, bool):
        raise RecordError(f"field {name!r} must be a boolean")
    return value


def optional_number(fields: dict[str, Any], name: str, default: float) -> float:
    return default if fields.get(name) is None else number(fields, name)


def finite(fields: dict[str, Any], name: str, default: float | None = None) -> float:
    """A number that is not NaN or infinite (sums that are added up and shown as JSON)."""
    value = number(fields, name) if default is None else optional_number(fields, name, default)
    if not math.isfinite(value):
        raise RecordError(f"field {name!r} must be a finite number")
    return value


def submap(fields: dict[str, Any], name: str) -> dict[str, Any] | None:
    value = fields.get(name)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RecordError(f"field {name!r} must be a map or nil")
    return value


def maps(fields: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = fields.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise RecordError(f"field {name!r} must be a list of maps")
    return value


def percent(value: float, *, what: str) -> float:
    if not math.isfinite(value) or not 0.0 <= value <= 100.0:
        raise RecordError(f"{what} must be between 0 and 100, got {value!r}")
    return value


def check_name(value: str, *, what: str, optional: bool = False) -> str:
    if optional and not value:
        return value
    if not NAME_RE.fullmatch(value):
        raise RecordError(f"invalid {what} {value!r:.70}")
    return value
