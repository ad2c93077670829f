"""The checks of flagd's published JSON schema (flags.json + targeting.json, schema v0), in Python.

No PyPI package ships that schema (flagd embeds it from its Go module; the Python provider
does not carry it), so these are equivalent checks, kept close to it in both directions: a file
the schema accepts passes, a file it refuses is refused here with a reason and a path.

* file: ``flags`` required, a map (or, as flagd's daemon reads it, an array of flags with a
  ``key`` each); other top-level keys (``$schema``, ``$comment``...) are allowed;
  ``metadata`` values are strings, numbers or booleans.
* flag: ``state`` (ENABLED/DISABLED) and ``variants`` required; ``defaultVariant`` a string or
  null; other properties (``description``...) allowed; variant values all booleans, strings,
  numbers or objects -- never arrays.
* targeting: ``{}`` or one JsonLogic operation of flagd's set, with the argument shapes the
  schema gives each (``==`` takes two arguments, ``sem_ver`` ``[version, op, version]`` with
  strict SemVer literals, ``fractional`` non-negative integer weights...).

Holdfast differs in three documented ways: flag keys must be usable in etcd keys and OFREP URLs
(``FLAG_KEY_RE``); an object with several operation keys is refused (JsonLogic cannot evaluate
it); ``{"$ref": name}`` is accepted wherever a rule is (flagd's schema only allows it as an
argument, but flagd expands it before evaluating, and so does Holdfast).
"""

from __future__ import annotations

import re
from typing import Any, Final

from holdfast.flags.rules import MAX_RULE_DEPTH, REF

MAX_FLAGS_PER_FILE: Final = 100  # one etcd transaction; etcd's default --max-txn-ops is 128
MAX_VARIANTS: Final = 200
STATES: Final = ("ENABLED", "DISABLED")

_METADATA: Final = {
    "type": "object",
    "additionalProperties": {"type": ["string", "number", "boolean"]},
}
_NON_EMPTY_NAMES: Final = {"minLength": 1}
FILE_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["flags"],
    "properties": {
        "flags": {
            "type": "object",
            "maxProperties": MAX_FLAGS_PER_FILE,
            "propertyNames": _NON_EMPTY_NAMES,
            "additionalProperties": {"$ref": "#/$defs/flag"},
        },
        "$evaluators": {
            "type": "object",
            "propertyNames": _NON_EMPTY_NAMES,
            "additionalProperties": {"type": "object"},
        },
        "metadata": _METADATA,
    },
    "$defs": {
        "flag": {
            "type": "object",
            "required": ["state", "variants"],
            "properties": {
                "state": {"enum": list(STATES)},
                "variants": {
                    "type": "object",
                    "minProperties": 1,
                    "maxProperties": MAX_VARIANTS,
                    "propertyNames": _NON_EMPTY_NAMES,
                    "additionalProperties": {"type": ["boolean", "string", "number", "object"]},
                },
                "defaultVariant": {"type": ["string", "null"]},
                "targeting": {"type": "object"},
                "metadata": _METADATA,
            },
        }
    },
}

# Operations of flagd's targeting schema and how many arguments each takes (min, max; None: no
# bound). "var", "missing", "missing_some", "!", "!!", the string comparisons, "sem_ver" and
# "fractional" have shapes of their own, checked below.
_BINARY: Final = ("==", "===", "!=", "!==", ">", ">=", "%", "/", "map", "filter", "all", "none")
ARITY: Final[dict[str, tuple[int, int | None]]] = {
    **dict.fromkeys(("substr", "<", "<="), (2, 3)),
    **dict.fromkeys((*_BINARY, "some", "in"), (2, 2)),
    "reduce": (3, 3),
    "*": (2, None),
    **dict.fromkeys(("if", "or", "and", "+", "-", "max", "min", "merge", "cat"), (1, None)),
}
SHAPED: Final = frozenset(
    {"var", "missing", "missing_some", "!", "!!", "starts_with", "ends_with", "sem_ver",
     "fractional"}
)  # fmt: skip
FLAGD_OPERATIONS: Final = frozenset(ARITY) | SHAPED
SEM_VER_OPERATORS: Final = ("=", "!=", ">", "<", ">=", "<=", "~", "^")
# SemVer 2.0.0's own regular expression: a literal version in a sem_ver rule must be strict.
SEMVER_RE: Final = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$",
    re.ASCII,
)
FLAGD_VARS: Final = frozenset({"$flagd.timestamp", "$flagd.flagKey"})


def _short(value: Any) -> str:
    return f"{value!r:.60}"


class _Check:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, path: str, text: str) -> None:
        self.problems.append(f"{path}: {text}")

    def targeting(self, node: Any, path: str) -> None:
        if not isinstance(node, dict):
            self.bad(path, "targeting must be a JSON object")
        elif node and not _is_ref(node):
            self.rule(node, path, 1)

    def rule(self, node: Any, path: str, depth: int) -> None:
        """``node`` must be one operation of flagd's set (or a ``$ref``)."""
        if depth > MAX_RULE_DEPTH:
            self.bad(path, f"targeting nests deeper than {MAX_RULE_DEPTH} levels")
            return
        if not isinstance(node, dict) or not node:
            self.bad(path, f"expected a JsonLogic rule (an object with one operation), got "
                           f"{_short(node)}")  # fmt: skip
            return
        if _is_ref(node):
            return
        if len(node) != 1:
            self.bad(path, f"a JsonLogic rule has exactly one operation, got {sorted(node)[:5]}")
            return
        op, args = next(iter(node.items()))
        where = f"{path}.{op}"
        if op not in FLAGD_OPERATIONS:
            self.bad(path, f"unknown operation {_short(op)} (flagd's targeting schema does not "
                           "have it)")  # fmt: skip
        elif op in ARITY:
            self.arguments(args, where, depth, *ARITY[op])
        else:
            getattr(self, "op_" + ("not" if op in ("!", "!!") else op))(args, where, depth)

    def arguments(self, args: Any, path: str, depth: int, low: int, high: int | None) -> None:
        if not isinstance(args, list) or len(args) < low or (high is not None and len(args) > high):
            count = f"{low}" if low == high else f"{low} to {high}" if high else f"{low} or more"
            self.bad(path, f"takes an array of {count} arguments, got {_short(args)}")
            return
        for i, arg in enumerate(args):
            self.argument(arg, f"{path}[{i}]", depth)

    def argument(self, arg: Any, path: str, depth: int) -> None:
        """A value (null, boolean, number, string, array) or a rule."""
        if isinstance(arg, dict):
            if not arg:
                self.bad(path, "an empty object is not a JsonLogic argument")
            else:
                self.rule(arg, path, depth + 1)

    def op_var(self, args: Any, path: str, depth: int) -> None:
        if isinstance(args, str) and args.startswith("$flagd.") and args not in FLAGD_VARS:
            self.bad(path, f"flagd defines only {' and '.join(sorted(FLAGD_VARS))}")

    def op_missing(self, args: Any, path: str, depth: int) -> None:
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            self.bad(path, "takes an array of data keys (strings)")

    def op_missing_some(self, args: Any, path: str, depth: int) -> None:
        ok = (
            isinstance(args, list)
            and len(args) == 2
            and _is_number(args[0])
            and isinstance(args[1], list)
            and all(isinstance(a, str) for a in args[1])
        )
        if not ok:
            self.bad(path, "takes [minimum, [data keys...]]")

    def op_not(self, args: Any, path: str, depth: int) -> None:
        self.argument(args[0] if isinstance(args, list) and len(args) == 1 else args, path, depth)

    def op_starts_with(self, args: Any, path: str, depth: int) -> None:
        if not isinstance(args, list) or len(args) != 2:
            self.bad(path, "takes [value, prefix-or-suffix], each a string or a rule")
            return
        for i, arg in enumerate(args):
            if not isinstance(arg, str):
                self.rule(arg, f"{path}[{i}]", depth + 1)

    op_ends_with = op_starts_with

    def op_sem_ver(self, args: Any, path: str, depth: int) -> None:
        if not isinstance(args, list) or len(args) != 3:
            self.bad(path, "takes [version, operator, version]")
            return
        if args[1] not in SEM_VER_OPERATORS:
            self.bad(f"{path}[1]", f"operator must be one of {' '.join(SEM_VER_OPERATORS)}, "
                                   f"got {_short(args[1])}")  # fmt: skip
        for i in (0, 2):
            arg = args[i]
            if isinstance(arg, str):
                if not SEMVER_RE.fullmatch(arg):
                    self.bad(f"{path}[{i}]", f"{_short(arg)} is not a full semantic version "
                                             "(MAJOR.MINOR.PATCH)")  # fmt: skip
            elif not (isinstance(arg, dict) and (_is_ref(arg) or set(arg) == {"var"})):
                self.bad(f"{path}[{i}]", 'must be a version string or a {"var": ...} rule')

    def op_fractional(self, args: Any, path: str, depth: int) -> None:
        if not isinstance(args, list) or not args:
            self.bad(path, "takes [bucketing rule?, [variant, weight?], ...]")
            return
        first, rest = args[0], args
        if isinstance(first, dict):
            self.rule(first, f"{path}[0]", depth + 1)
            rest = args[1:]
        elif not isinstance(first, list):
            self.bad(f"{path}[0]", "the bucketing value must be a rule such as "
                                   '{"var": "email"}, or leave it out to bucket by flag key and '
                                   "targetingKey")  # fmt: skip
            rest = args[1:]
        for i, entry in enumerate(rest, start=len(args) - len(rest)):
            self.distribution(entry, f"{path}[{i}]", depth)

    def distribution(self, entry: Any, path: str, depth: int) -> None:
        if not isinstance(entry, list) or not 1 <= len(entry) <= 2:
            self.bad(path, "a distribution is [variant] or [variant, weight]")
            return
        self.argument(entry[0], f"{path}[0]", depth)
        if len(entry) == 2:
            weight = entry[1]
            if isinstance(weight, dict):
                self.rule(weight, f"{path}[1]", depth + 1)
            elif not (_is_whole(weight) and weight >= 0):
                self.bad(f"{path}[1]", f"a weight is a non-negative integer or a rule, got "
                                       f"{_short(weight)}")  # fmt: skip


def _is_ref(node: dict[str, Any]) -> bool:
    return len(node) == 1 and REF in node


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_whole(value: Any) -> bool:
    """JSON Schema's "integer": 5 and 5.0 alike."""
    return _is_number(value) and (isinstance(value, int) or value.is_integer())


def targeting_problems(rule: Any, *, where: str) -> list[str]:
    """Every way ``rule`` (a flag's targeting or an evaluator) breaks flagd's targeting schema."""
    check = _Check()
    check.targeting(rule, where)
    return check.problems
