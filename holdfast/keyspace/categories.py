"""Query categories: the name rules, and the category rules a route may carry.

A request's category is the ``X-Holdfast-Category`` header when the agent sends one; otherwise
the first of the route's rules that matches the request's last user message (keywords,
case-insensitive, and/or an RE2 pattern), optionally only for some tenants; otherwise
``default``. The record is checked for shape here; the pattern's syntax is checked where it
is compiled (configsvc refuses a bad one with 400, the sidecar skips one it cannot compile).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Self

from holdfast.keyspace import fields
from holdfast.keyspace.codec import RecordError

CATEGORY_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
DEFAULT_CATEGORY: Final = "default"
OTHER: Final = "other"
# Categories per release a sidecar keeps apart; further ones count as OTHER.
MAX_CATEGORIES: Final = 32
MAX_CATEGORY_RULES: Final = 32
MAX_KEYWORDS: Final = 32
MAX_KEYWORD_CHARS: Final = 64
MAX_PATTERN_CHARS: Final = 512
MAX_RULE_TENANTS: Final = 32
MAX_TENANT_CHARS: Final = 128
# Rules look at no more than this much of the last user message (its head).
MAX_SCANNED_CHARS: Final = 4096


def valid_category(name: str) -> bool:
    return CATEGORY_RE.fullmatch(name) is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class CategoryRule:
    """``category`` for a request whose last user message contains one of ``keywords``
    (case-insensitive) or matches ``pattern`` (RE2, searched); with ``tenants``, only for
    requests of those tenants (``X-Holdfast-Tenant``). A rule with tenants alone matches every
    request of those tenants."""

    category: str
    keywords: tuple[str, ...] = ()
    pattern: str = ""
    tenants: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not valid_category(self.category) or self.category == OTHER:
            raise RecordError(
                f"category {self.category!r:.70} must be 1-64 letters, digits or ._:- "
                f"(and not {OTHER!r})"
            )
        if not (self.keywords or self.pattern or self.tenants):
            raise RecordError(
                f"category rule {self.category!r} needs keywords, a pattern or tenants"
            )
        _strings(self.keywords, "keywords", MAX_KEYWORDS, MAX_KEYWORD_CHARS)
        _strings(self.tenants, "tenants", MAX_RULE_TENANTS, MAX_TENANT_CHARS)
        if len(self.pattern) > MAX_PATTERN_CHARS:
            raise RecordError(
                f"category rule pattern is longer than {MAX_PATTERN_CHARS} characters"
            )

    def to_map(self) -> dict[str, Any]:
        return {
            "category": self.category,
            "keywords": list(self.keywords),
            "pattern": self.pattern,
            "tenants": list(self.tenants),
        }

    @classmethod
    def from_map(cls, f: dict[str, Any]) -> Self:
        return cls(
            category=fields.text(f, "category"),
            keywords=_string_list(f, "keywords"),
            pattern=fields.text(f, "pattern", optional=True),
            tenants=_string_list(f, "tenants"),
        )


def _strings(values: tuple[str, ...], what: str, most: int, longest: int) -> None:
    if len(values) > most:
        raise RecordError(f"a category rule has at most {most} {what}")
    for v in values:
        if not isinstance(v, str) or not v.strip() or len(v) > longest:
            raise RecordError(f"category rule {what} must be 1-{longest} characters, not blank")


def _string_list(f: dict[str, Any], name: str) -> tuple[str, ...]:
    value = f.get(name) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise RecordError(f"field {name!r} must be a list of strings")
    return tuple(value)


def decode_rules(raw: list[dict[str, Any]]) -> tuple[CategoryRule, ...]:
    if len(raw) > MAX_CATEGORY_RULES:
        raise RecordError(f"a route has at most {MAX_CATEGORY_RULES} category rules")
    return tuple(CategoryRule.from_map(m) for m in raw)
