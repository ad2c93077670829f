"""Category rules compiled for matching: RE2 patterns, lower-cased keywords, tenant sets.

configsvc compiles every rule it is given before it stores a route (a pattern that does not
compile is refused with 400 and RE2's reason); the sidecar compiles the stored rules once per
route and matches requests with them. Both use this module, so a rule configsvc admits is a
rule every sidecar can use. The rule records are ``holdfast.keyspace.categories``.

RE2 runs in linear time with bounded memory (``PATTERN_MAX_MEM`` per pattern), so no operator
pattern can make the request path slow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from holdfast.keyspace.categories import CategoryRule

PATTERN_MAX_MEM: Final = 1 << 20  # bytes RE2 may use for one compiled pattern


class RuleError(ValueError):
    """A category rule's pattern does not compile (its message says why)."""


def compile_pattern(pattern: str) -> Any:
    # Imported here: RE2 is ~1.2 MB resident and only rules with a pattern need it.
    import re2

    options = re2.Options()
    options.log_errors = False
    options.max_mem = PATTERN_MAX_MEM
    options.never_capture = True
    try:
        return re2.compile(pattern, options=options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise RuleError(f"pattern {pattern!r:.80} is not valid RE2: {text}") from exc


@dataclass(frozen=True, slots=True)
class CompiledRule:
    category: str
    keywords: tuple[str, ...]  # lower-cased
    pattern: Any  # a compiled RE2 pattern, or None
    tenants: frozenset[str]
    needs_text: bool

    def matches(self, tenant: str | None, text: str, lowered: str) -> bool:
        if self.tenants and tenant not in self.tenants:
            return False
        if not self.needs_text:
            return True
        if any(k in lowered for k in self.keywords):
            return True
        return self.pattern is not None and self.pattern.search(text) is not None


def compile_rule(rule: CategoryRule) -> CompiledRule:
    """The rule ready to match; RuleError when its pattern is not valid RE2."""
    pattern = compile_pattern(rule.pattern) if rule.pattern else None
    return CompiledRule(
        category=rule.category,
        keywords=tuple(k.lower() for k in rule.keywords),
        pattern=pattern,
        tenants=frozenset(rule.tenants),
        needs_text=bool(rule.keywords or rule.pattern),
    )
