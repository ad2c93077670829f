"""A request's query category: the agent's header, else the route's category rules; and the one
cap on categories per release that the signal book and the Prometheus series share.

Operator patterns are RE2 (linear time, bounded memory) over at most ``MAX_SCANNED_CHARS`` of
the last user message, so no rule can make the request path slow. Rules are compiled once per
route record (the config publishes a new ``Route`` object per revision) and shared by every
request until the route changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Final

from holdfast.dialects import RequestView
from holdfast.keyspace import Route
from holdfast.keyspace.categories import (
    DEFAULT_CATEGORY,
    MAX_CATEGORIES,
    MAX_SCANNED_CHARS,
    OTHER,
    CategoryRule,
    valid_category,
)
from holdfast.logs import get_logger
from holdfast.signals.categories import CompiledRule, RuleError, compile_rule

log = get_logger(__name__)

CATEGORY_HEADER: Final = "X-Holdfast-Category"
TENANT_HEADER: Final = "X-Holdfast-Tenant"


class CategoryRules:
    """A route's rules, compiled; a rule that does not compile here is skipped (and logged)."""

    def __init__(self, rules: Sequence[CategoryRule]) -> None:
        compiled = []
        for rule in rules:
            try:
                compiled.append(compile_rule(rule))
            except RuleError as exc:
                log.warning("category_rule_skipped", category=rule.category, error=str(exc))
        self.rules: tuple[CompiledRule, ...] = tuple(compiled)
        self._needs_text = any(r.needs_text for r in self.rules)

    def match(self, request: RequestView, tenant: str | None) -> str | None:
        """The first matching rule's category, None when none matches."""
        if not self.rules:
            return None
        text = request.last_user_text(MAX_SCANNED_CHARS) if self._needs_text else ""
        lowered = text.lower()
        for rule in self.rules:
            if rule.matches(tenant, text, lowered):
                return rule.category
        return None


def category_of(header: str | None) -> str:
    if not header:
        return DEFAULT_CATEGORY
    return header if valid_category(header) else OTHER


class Categorizer:
    """The header wins (the agent knows best); then the route's rules; then ``default``."""

    def __init__(self, route: Callable[[], Route | None] | None = None) -> None:
        self._route_of = route
        self._route: Route | None = None
        self._source: tuple[CategoryRule, ...] = ()
        self._rules = CategoryRules(())

    def rules_for(self, route: Route | None) -> CategoryRules:
        """Compiled once per route record; a route change that keeps the rules keeps them."""
        if route is not self._route:
            self._route = route
            rules = route.categories if route is not None else ()
            if rules != self._source:
                self._source, self._rules = rules, CategoryRules(rules)
        return self._rules

    def of(self, headers: Mapping[str, str], request: RequestView) -> str:
        header = headers.get(CATEGORY_HEADER)
        if header:
            return category_of(header)
        if self._route_of is None:
            return DEFAULT_CATEGORY
        rules = self.rules_for(self._route_of())
        if not rules.rules:
            return DEFAULT_CATEGORY
        return rules.match(request, headers.get(TENANT_HEADER)) or DEFAULT_CATEGORY


class CategoryCap:
    """At most ``most`` categories per release (besides ``other``); later ones are ``other``.

    One instance is shared by the signal book and the Prometheus series, so a caller sending
    a thousand distinct categories makes at most ``most + 1`` series per release."""

    def __init__(self, most: int = MAX_CATEGORIES) -> None:
        self.most = most
        self._seen: dict[str, set[str]] = {}

    def admit(self, release: str, category: str) -> str:
        seen = self._seen.get(release)
        if seen is None:
            seen = self._seen[release] = set()
        if category in seen or category == OTHER:
            return category
        if len(seen) >= self.most:
            return OTHER
        seen.add(category)
        return category
