"""Prompt templates: literal text with named variables ``{{name}}``.

Syntax (one rule set for every prompt):

* ``{{name}}`` or ``{{ name }}`` -- a variable; names are ``[A-Za-z_][A-Za-z0-9_]{0,63}``;
* ``\\{{`` -- a literal ``{{`` (the backslash is dropped); nothing else is an escape;
* any other ``{{`` (an unclosed one, a bad name) makes the template invalid, so a typo is an
  error when the version is created, never a silently literal ``{{nmae}}`` in production.

A template is parsed once into alternating literal and variable parts; rendering is a join.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

VAR_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_TOKEN_RE: Final = re.compile(r"\\\{\{|\{\{\s*([^{}]*?)\s*\}\}|\{\{")
ESCAPE: Final = "\\{{"
MAX_VARIABLES: Final = 64
MAX_VALUE_CHARS: Final = 64 * 1024


class TemplateError(ValueError):
    """A template that does not parse, or variables that do not fit it."""


@dataclass(frozen=True, slots=True)
class Template:
    """``parts`` alternate literal, variable, literal, ... (always an odd count)."""

    parts: tuple[str, ...]
    variables: tuple[str, ...] = ()  # distinct, in order of first use (set by parse)

    def fill(self, values: Mapping[str, str]) -> str:
        """Substitute without checking: ``values`` must hold every variable (see render)."""
        out = list(self.parts)
        for i in range(1, len(out), 2):
            out[i] = values[out[i]]
        return "".join(out)

    def render(self, values: Mapping[str, str]) -> str:
        wanted = self.variables
        missing = [v for v in wanted if v not in values]
        if missing:
            raise TemplateError(f"missing value for variable(s): {', '.join(missing)}")
        unknown = sorted(set(values) - set(wanted))
        if unknown:
            allowed = ", ".join(wanted) or "none"
            raise TemplateError(
                f"unknown variable(s): {', '.join(unknown)}; this prompt takes: {allowed}"
            )
        return self.fill(values)


def parse(text: str) -> Template:
    parts: list[str] = []
    literal: list[str] = []
    pos = 0
    for match in _TOKEN_RE.finditer(text):
        literal.append(text[pos : match.start()])
        pos = match.end()
        if match.group(0) == ESCAPE:
            literal.append("{{")
            continue
        name = match.group(1)
        if name is None or not VAR_NAME_RE.fullmatch(name):
            line = text.count("\n", 0, match.start()) + 1
            shown = text[match.start() : match.start() + 40]
            raise TemplateError(
                f"line {line}: {shown!r} is not a variable; use {{{{name}}}} with a name of "
                "letters, digits and '_' (or write \\{{ for a literal {{)"
            )
        parts.append("".join(literal))
        literal = []
        parts.append(name)
    literal.append(text[pos:])
    parts.append("".join(literal))
    template = Template(tuple(parts), tuple(dict.fromkeys(parts[1::2])))
    if len(template.variables) > MAX_VARIABLES:
        raise TemplateError(f"a prompt takes at most {MAX_VARIABLES} variables")
    return template


def values_from(raw: object, *, what: str) -> dict[str, str]:
    """Variable values from a JSON object: strings, numbers and booleans (as JSON text)."""
    if not isinstance(raw, dict):
        raise TemplateError(f"{what} must be a JSON object of variable values")
    if len(raw) > MAX_VARIABLES:
        raise TemplateError(f"{what} has more than {MAX_VARIABLES} variables")
    out: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = value
        elif isinstance(value, int | float):
            text = str(value)
        else:
            raise TemplateError(f"{what}: variable {key!r:.70} must be a string, number or boolean")
        if len(text) > MAX_VALUE_CHARS:
            raise TemplateError(f"{what}: variable {key!r:.70} is over {MAX_VALUE_CHARS} chars")
        out[str(key)] = text
    return out
