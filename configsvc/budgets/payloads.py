"""Body of ``PUT /v1/budgets/{scope}``: strict parsing and validation, pure."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from configsvc.errors import InvalidRequest
from configsvc.http import parse_object, text
from holdfast.budgets.window import WindowError, check_window, check_zone
from holdfast.keyspace import RecordError, validate_name
from holdfast.keyspace.budget import (
    DEFAULT_QUEUE_TIMEOUT,
    DEFAULT_SOFT,
    MAX_COST_MICROS,
    MAX_QUEUE_TIMEOUT,
    MAX_REQUEST_CAP,
    MAX_TOKENS_LIMIT,
    MAX_TOOL_CALLS_LIMIT,
    scope_kind,
)
from holdfast.keyspace.price import usd_micros

SET_FIELDS: Final = frozenset(
    {
        "tokens",
        "cost",
        "window",
        "zone",
        "soft",
        "on_exhausted",
        "request_cap",
        "reason",
        "queue_timeout",
        "fit_cap",
    }
    | {"tool_calls"}
)


def cost_limit(obj: dict[str, Any]) -> int:
    """``cost``: USD per window (a number or a decimal string, at most 6 decimals) -> micros."""
    value = obj.get("cost")
    if value is None:
        return 0
    try:
        micros = usd_micros(value, what="field 'cost'", maximum=MAX_COST_MICROS)
    except RecordError as exc:
        raise InvalidRequest(str(exc), param="cost") from exc
    if micros == 0:
        raise InvalidRequest("field 'cost' must be at least 0.000001 USD", param="cost")
    return micros


def budget_scope(value: str) -> str:
    try:
        scope_kind(value)
    except RecordError as exc:
        raise InvalidRequest(str(exc), param="scope") from exc
    return value


def _whole(obj: dict[str, Any], name: str, low: int, high: int, *, required: bool) -> int:
    value = obj.get(name)
    if value is None and not required:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"field {name!r} must be a whole number", param=name)
    if not low <= value <= high:
        raise InvalidRequest(f"field {name!r} must be between {low} and {high}", param=name)
    return value


def parse_action(value: str) -> tuple[str, str]:
    """``reject`` or ``degrade:RELEASE`` -> (action, release)."""
    if value in ("", "reject"):
        return "reject", ""
    kind, sep, release = value.partition(":")
    if kind != "degrade" or not sep:
        raise InvalidRequest(
            f"on_exhausted must be reject or degrade:RELEASE, got {value!r:.60}",
            param="on_exhausted",
        )
    try:
        validate_name(release, what="degrade release")
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="on_exhausted") from exc
    return "degrade", release


@dataclass(frozen=True, slots=True)
class SetBudget:
    tokens: int  # 0: no token limit
    window: str
    zone: str
    soft: float
    action: str
    degrade_to: str
    request_cap: int
    reason: str
    cost: int = 0  # micro-dollars per window; 0: no cost limit
    tool_calls: int = 0  # session scopes: MCP tool calls per window; 0: no tool-call limit
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT  # seconds a request may wait for room
    fit_cap: int = 0  # lowest per-choice cap a request may be fitted down to (0: never)

    @classmethod
    def parse(cls, raw: bytes) -> SetBudget:
        obj = parse_object(raw, SET_FIELDS)
        tokens = _whole(obj, "tokens", 1, MAX_TOKENS_LIMIT, required=False)
        cost = cost_limit(obj)
        tool_calls = _whole(obj, "tool_calls", 1, MAX_TOOL_CALLS_LIMIT, required=False)
        if not tokens and not cost and not tool_calls:
            raise InvalidRequest(
                "a budget needs 'tokens', 'cost' or both (or, for a session, 'tool_calls')",
                param="tokens",
            )
        window = text(obj, "window", required=True)
        try:
            check_window(window)
            zone = check_zone(text(obj, "zone"))
        except WindowError as exc:
            param = "zone" if "zone" in str(exc) else "window"
            raise InvalidRequest(str(exc), param=param) from exc
        soft = obj.get("soft", DEFAULT_SOFT)
        if (
            isinstance(soft, bool)
            or not isinstance(soft, int | float)
            or not math.isfinite(soft)
            or not 0 < soft <= 1
        ):
            raise InvalidRequest("field 'soft' must be a fraction in (0, 1]", param="soft")
        action, degrade_to = parse_action(text(obj, "on_exhausted"))
        queue_timeout = obj.get("queue_timeout", DEFAULT_QUEUE_TIMEOUT)
        if (
            isinstance(queue_timeout, bool)
            or not isinstance(queue_timeout, int | float)
            or not math.isfinite(queue_timeout)
            or not 0 <= queue_timeout <= MAX_QUEUE_TIMEOUT
        ):
            raise InvalidRequest(
                f"field 'queue_timeout' must be 0 (no waiting) to {MAX_QUEUE_TIMEOUT:g} seconds",
                param="queue_timeout",
            )
        return cls(
            tokens=tokens,
            window=window,
            zone=zone,
            soft=float(soft),
            action=action,
            degrade_to=degrade_to,
            request_cap=_whole(obj, "request_cap", 1, MAX_REQUEST_CAP, required=False),
            reason=text(obj, "reason"),
            cost=cost,
            tool_calls=tool_calls,
            queue_timeout=float(queue_timeout),
            fit_cap=_whole(obj, "fit_cap", 0, MAX_REQUEST_CAP, required=False),
        )
