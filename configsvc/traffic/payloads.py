"""Request bodies and query strings of the traffic API (canary, switch, shadow, pins): pure.

Same rules as ``configsvc.http.payloads``: one JSON object per body, unknown fields refused by name,
numbers must be JSON numbers (a string ``"10"`` is refused rather than guessed at).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from configsvc.errors import InvalidRequest
from configsvc.http import name, parse_object, text
from configsvc.releases import FORCE_FIELD, allowed
from holdfast.keyspace.keys import ID_RE
from holdfast.keyspace.route import (
    DEFAULT_MIN_AGREEMENT,
    DEFAULT_MIN_SAMPLES,
    DEFAULT_MIN_SIMILARITY,
)

DEFAULT_PINS_LIMIT: Final = 100
MAX_PINS_LIMIT: Final = 10_000
MAX_MIN_SAMPLES: Final = 10_000_000


def number(value: Any, param: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidRequest(f"field {param!r} must be a number", param=param)
    return float(value)


def percent(value: Any, param: str = "percent", *, zero_ok: bool = True) -> float:
    """0-100 (or (0, 100] when ``zero_ok`` is false)."""
    if value is None:
        raise InvalidRequest(f"field {param!r} is required", param=param)
    p = number(value, param)
    low_ok = p >= 0 if zero_ok else p > 0
    if not low_ok or p > 100:
        span = "between 0 and 100" if zero_ok else "above 0 and at most 100"
        raise InvalidRequest(f"{param} must be {span}, got {p:g}", param=param)
    return p


def fraction(value: Any, param: str) -> float:
    f = number(value, param)
    if not 0.0 <= f <= 1.0:
        raise InvalidRequest(f"{param} must be between 0 and 1, got {f:g}", param=param)
    return f


def min_samples(value: Any, param: str = "min_samples") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_MIN_SAMPLES:
        raise InvalidRequest(f"{param} must be an integer from 1 to {MAX_MIN_SAMPLES}", param=param)
    return value


def session_id(value: str, param: str = "session") -> str:
    if not ID_RE.fullmatch(value):
        raise InvalidRequest(
            f"invalid session id {value!r:.140}: use 1-128 characters of letters, digits and "
            "._:@- starting with a letter or digit",
            param=param,
        )
    return value


def _release(obj: Mapping[str, Any], field: str = "release") -> str:
    return name(text(obj, field, required=True), what="release", param=field)


def _flag(obj: Mapping[str, Any], field: str) -> bool:
    value = obj.get(field, False)
    if not isinstance(value, bool):
        raise InvalidRequest(f"field {field!r} must be true or false", param=field)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class SetCanary:
    release: str
    percent: float
    reason: str = ""
    allow_provider_change: bool = False

    FIELDS: ClassVar[frozenset[str]] = frozenset({"release", "percent", "reason", FORCE_FIELD})

    @classmethod
    def parse(cls, raw: bytes) -> SetCanary:
        obj = parse_object(raw, cls.FIELDS)
        return cls(
            release=_release(obj),
            percent=percent(obj.get("percent")),
            reason=text(obj, "reason"),
            allow_provider_change=allowed(obj),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Reason:
    """The body of a clear (canary or shadow): only a reason, and it may be empty."""

    reason: str = ""

    FIELDS: ClassVar[frozenset[str]] = frozenset({"reason"})

    @classmethod
    def parse(cls, raw: bytes) -> Reason:
        return cls(reason=text(parse_object(raw, cls.FIELDS, empty_ok=True), "reason"))


@dataclass(frozen=True, slots=True, kw_only=True)
class Switch:
    release: str = ""  # empty with back=True: the previous stable release
    back: bool = False
    migrate: bool = False
    probe: bool = True
    reason: str = ""
    allow_provider_change: bool = False

    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"release", "back", "migrate", "probe", "reason", FORCE_FIELD}
    )

    @classmethod
    def parse(cls, raw: bytes) -> Switch:
        obj = parse_object(raw, cls.FIELDS)
        back = _flag(obj, "back")
        probe = obj.get("probe", True)
        if not isinstance(probe, bool):
            raise InvalidRequest("field 'probe' must be true or false", param="probe")
        given = text(obj, "release")
        if back == bool(given):
            raise InvalidRequest(
                "give either 'release' (switch to it) or 'back': true (to the previous stable)",
                param="release",
            )
        return cls(
            release=name(given, what="release", param="release") if given else "",
            back=back,
            migrate=_flag(obj, "migrate"),
            probe=probe,
            reason=text(obj, "reason"),
            allow_provider_change=allowed(obj),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SetShadow:
    release: str
    percent: float
    min_samples: int = DEFAULT_MIN_SAMPLES
    min_similarity: float = DEFAULT_MIN_SIMILARITY
    min_agreement: float = DEFAULT_MIN_AGREEMENT
    reason: str = ""
    allow_provider_change: bool = False

    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"release", "percent", "min_samples", "min_similarity", "min_agreement", "reason"}
        | {FORCE_FIELD}
    )

    @classmethod
    def parse(cls, raw: bytes) -> SetShadow:
        obj = parse_object(raw, cls.FIELDS)
        get = obj.get
        return cls(
            release=_release(obj),
            percent=percent(get("percent")),
            min_samples=min_samples(get("min_samples", DEFAULT_MIN_SAMPLES)),
            min_similarity=fraction(
                get("min_similarity", DEFAULT_MIN_SIMILARITY), "min_similarity"
            ),
            min_agreement=fraction(get("min_agreement", DEFAULT_MIN_AGREEMENT), "min_agreement"),
            reason=text(obj, "reason"),
            allow_provider_change=allowed(obj),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportQuery:
    """Threshold overrides for one shadow report (None: the shadow's own)."""

    min_samples: int | None = None
    min_similarity: float | None = None
    min_agreement: float | None = None

    FIELDS: ClassVar[frozenset[str]] = frozenset({"min_samples", "min_similarity", "min_agreement"})

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> ReportQuery:
        _known(query, cls.FIELDS)
        samples = _query_number(query, "min_samples", int)
        similarity = _query_number(query, "min_similarity", float)
        agreement = _query_number(query, "min_agreement", float)
        return cls(
            min_samples=None if samples is None else min_samples(samples),
            min_similarity=None if similarity is None else fraction(similarity, "min_similarity"),
            min_agreement=None if agreement is None else fraction(agreement, "min_agreement"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class PinsQuery:
    release: str = ""
    limit: int = DEFAULT_PINS_LIMIT

    FIELDS: ClassVar[frozenset[str]] = frozenset({"release", "limit"})

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> PinsQuery:
        _known(query, cls.FIELDS)
        limit = _query_number(query, "limit", int)
        if limit is not None and not 1 <= limit <= MAX_PINS_LIMIT:
            raise InvalidRequest(f"limit must be between 1 and {MAX_PINS_LIMIT}", param="limit")
        release = query.get("release", "")
        return cls(
            release=name(release, what="release", param="release") if release else "",
            limit=DEFAULT_PINS_LIMIT if limit is None else int(limit),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class MigratePins:
    source: str
    target: str
    session: str = ""
    percent: float | None = None
    reason: str = ""
    allow_provider_change: bool = False

    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"from", "to", "session", "percent", "reason", FORCE_FIELD}
    )

    @classmethod
    def parse(cls, raw: bytes) -> MigratePins:
        obj = parse_object(raw, cls.FIELDS)
        source, target = _release(obj, "from"), _release(obj, "to")
        if source == target:
            raise InvalidRequest(f"'from' and 'to' are both {source!r}; nothing to do", param="to")
        session = text(obj, "session")
        given = obj.get("percent")
        return cls(
            source=source,
            target=target,
            session=session_id(session) if session else "",
            percent=None if given is None else percent(given, zero_ok=False),
            reason=text(obj, "reason"),
            allow_provider_change=allowed(obj),
        )


def _known(query: Mapping[str, str], allowed: frozenset[str]) -> None:
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise InvalidRequest(f"unknown query parameter(s): {', '.join(unknown)}", param=unknown[0])


def _query_number(query: Mapping[str, str], key: str, kind: type[int] | type[float]) -> Any:
    raw = query.get(key)
    if raw is None or raw == "":
        return None
    try:
        return kind(raw)
    except ValueError as exc:
        what = "an integer" if kind is int else "a number"
        raise InvalidRequest(f"{key} must be {what}", param=key) from exc
