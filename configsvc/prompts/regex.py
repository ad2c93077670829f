"""Operator regexes of evaluation cases, under RE2 (linear time), and a JSON Schema validator
whose ``pattern`` keyword uses them too.

A case file comes from whoever may run an evaluation. Python's ``re`` backtracks: a pattern
like ``(a+)+$`` takes exponential time, and its C loop holds the GIL, so even in a worker thread
it would stall configsvc's event loop (the leader's rollout controller, its lease keep-alive).
RE2 matches in time linear in the input and refuses what it cannot do that way
(backreferences, lookaround); such a pattern is refused when the case file is loaded.

JSON Schema: ``pattern`` is validated with RE2; ``patternProperties`` is refused, because
jsonschema also matches those patterns internally with Python's ``re`` (additionalProperties,
unevaluatedProperties), out of reach of a keyword override.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any, Final, Protocol

import re2
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

MAX_PATTERN_CHARS: Final = 4096
MAX_SCHEMA_NODES: Final = 10_000


class RegexRefused(ValueError):
    """A pattern RE2 does not accept, or one too long; the message says why."""


class Searcher(Protocol):
    @property
    def pattern(self) -> str: ...

    def search(self, text: str) -> object | None: ...


def _options() -> Any:
    options = re2.Options()
    options.log_errors = False  # the refusal is reported to the operator, not to stderr
    return options


_OPTIONS: Final = _options()


@lru_cache(maxsize=512)
def compile_re2(pattern: str) -> Searcher:
    if len(pattern) > MAX_PATTERN_CHARS:
        raise RegexRefused(f"a pattern is limited to {MAX_PATTERN_CHARS} characters")
    try:
        compiled: Searcher = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        detail = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
        raise RegexRefused(
            f"{detail} (patterns run under RE2: no backreferences or lookaround)"
        ) from exc
    return compiled


def _pattern(
    validator: Any, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and compile_re2(pattern).search(instance) is None:
        yield ValidationError(f"{instance[:80]!r} does not match {pattern[:80]!r}")


SchemaValidator: Final = validators.extend(Draft202012Validator, {"pattern": _pattern})  # type: ignore[no-untyped-call]


def check_schema_patterns(schema: Any) -> None:
    """Refuse ``patternProperties`` and any ``pattern`` RE2 does not accept (RegexRefused)."""
    stack, seen = [schema], 0
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_SCHEMA_NODES:
            raise RegexRefused(f"the schema has over {MAX_SCHEMA_NODES} nodes")
        if isinstance(node, dict):
            if isinstance(node.get("patternProperties"), dict):
                raise RegexRefused("'patternProperties' is not supported in evaluation schemas")
            pattern = node.get("pattern")
            if isinstance(pattern, str):
                compile_re2(pattern)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
