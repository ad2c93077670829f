"""Parsing and validation of request bodies and query strings: pure functions, no I/O.

Each body is a JSON object with a fixed set of fields; unknown fields are refused by name so
that a typo (``"relase"``) is an error instead of a silently ignored value. These are the
pieces every concern's payloads are built from (``configsvc.releases.payloads`` and the like).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from configsvc.errors import InvalidRequest
from configsvc.limits import MAX_HISTORY_LIMIT
from holdfast.json_limits import DEFAULT_MAX_JSON_DEPTH, JsonRefused, loads_bounded
from holdfast.keyspace import RecordError, validate_name
from holdfast.keyspace.fields import MAX_TEXT

DEFAULT_HISTORY_LIMIT: Final = 50
MAX_JSON_DEPTH: Final = DEFAULT_MAX_JSON_DEPTH  # request bodies are at most 64 KiB anyway


def bounded_json(raw: bytes | str, *, what: str, param: str | None = None) -> Any:
    """JSON from a client: nesting at most MAX_JSON_DEPTH deep, no NaN, no huge ints, no lone
    surrogates (they cannot be stored), else InvalidRequest naming ``what``."""
    try:
        value = loads_bounded(raw, MAX_JSON_DEPTH)
    except JsonRefused as exc:
        raise InvalidRequest(f"{what} refused: {exc}", param=param) from exc
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:
        raise InvalidRequest(
            f"{what} refused: a string holds a lone UTF-16 surrogate", param=param
        ) from exc
    return value


def parse_object(raw: bytes, allowed: frozenset[str], *, empty_ok: bool = False) -> dict[str, Any]:
    """Decode ``raw`` as one JSON object whose keys are all in ``allowed``."""
    if not raw.strip():
        if empty_ok:
            return {}
        raise InvalidRequest("request body must be a JSON object")
    obj = bounded_json(raw, what="request body")
    if not isinstance(obj, dict):
        raise InvalidRequest(f"request body must be a JSON object, not {type(obj).__name__}")
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise InvalidRequest(
            f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            param=unknown[0],
        )
    return obj


def text(obj: Mapping[str, Any], name: str, *, required: bool = False) -> str:
    value = obj.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"field {name!r} is required", param=name)
        return ""
    if not isinstance(value, str):
        raise InvalidRequest(f"field {name!r} must be a string", param=name)
    if required and not value:
        raise InvalidRequest(f"field {name!r} must not be empty", param=name)
    if len(value) > MAX_TEXT:
        raise InvalidRequest(f"field {name!r} is longer than {MAX_TEXT} characters", param=name)
    return value


def name(value: str, *, what: str, param: str) -> str:
    try:
        return validate_name(value, what=what)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param=param) from exc


def checked(param: str, check: Any, value: str) -> str:
    """``check(value)`` (a record validator); its RecordError becomes 400 naming ``param``."""
    try:
        result: str = check(value)
    except RecordError as exc:
        raise InvalidRequest(str(exc), param=param) from exc
    return result


@dataclass(frozen=True, slots=True, kw_only=True)
class HistoryQuery:
    agent: str = ""
    limit: int = DEFAULT_HISTORY_LIMIT

    FIELDS: ClassVar[frozenset[str]] = frozenset({"agent", "limit"})

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> HistoryQuery:
        unknown = sorted(set(query) - cls.FIELDS)
        if unknown:
            raise InvalidRequest(
                f"unknown query parameter(s): {', '.join(unknown)}", param=unknown[0]
            )
        agent = query.get("agent", "")
        raw_limit = query.get("limit", "") or str(DEFAULT_HISTORY_LIMIT)
        try:
            limit = int(raw_limit)
        except ValueError as exc:
            raise InvalidRequest("limit must be an integer", param="limit") from exc
        if not 1 <= limit <= MAX_HISTORY_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_HISTORY_LIMIT}", param="limit")
        return cls(agent=name(agent, what="agent", param="agent") if agent else "", limit=limit)
