"""Targeting rules: the JsonLogic operations flagd allows, structural checks, ``$ref`` expansion.

A rule is checked once, when a flag is applied and again when a sidecar decodes its record, so
evaluation never meets an unknown operation or an unresolved ``$ref``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Final

from json_logic.builtins import BUILTINS

from holdfast.flags import custom_ops

# Operations json_logic's apply() handles itself (they control evaluation of their arguments).
SPECIAL_FORMS: Final = frozenset(
    {"if", "?:", "and", "or", "filter", "reduce", "map", "all", "some", "none"}
)
# "log" writes evaluation data to stdout: never on the request path.
EXCLUDED: Final = frozenset({"log"})
CUSTOM: Final = {
    "fractional": custom_ops.fractional,
    "sem_ver": custom_ops.sem_ver,
    "starts_with": custom_ops.starts_with,
    "ends_with": custom_ops.ends_with,
}
OPERATIONS: Final = {
    **{k: v for k, v in BUILTINS.items() if k not in EXCLUDED and callable(v)},
    **CUSTOM,
}
KNOWN_OPERATIONS: Final = frozenset(OPERATIONS) | SPECIAL_FORMS
REF: Final = "$ref"
MAX_RULE_DEPTH: Final = 24
MAX_RULE_NODES: Final = 10_000


class RuleError(ValueError):
    """A targeting rule that cannot be evaluated; the message names where and why."""


def check_rule(rule: Any, *, where: str) -> None:
    """Raise RuleError unless ``rule`` is a JsonLogic tree of known operations, ``$ref``-free."""
    if not isinstance(rule, dict):
        raise RuleError(f"{where}: targeting must be a JSON object")
    nodes = 0
    stack: list[tuple[Any, str, int]] = [(rule, where, 1)]
    while stack:
        node, path, depth = stack.pop()
        nodes += 1
        if nodes > MAX_RULE_NODES:
            raise RuleError(f"{where}: targeting has more than {MAX_RULE_NODES} nodes")
        if depth > MAX_RULE_DEPTH:
            raise RuleError(f"{path}: targeting nests deeper than {MAX_RULE_DEPTH} levels")
        if isinstance(node, list):
            stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(node))
        elif isinstance(node, dict):
            if not node and depth == 1:
                continue  # {} is "no targeting", as in flagd
            if len(node) != 1:
                raise RuleError(
                    f"{path}: a JsonLogic operation is an object with exactly one key, "
                    f"got {sorted(node)[:5]}"
                )
            op, args = next(iter(node.items()))
            if op == REF:
                raise RuleError(f"{path}: unresolved $ref {args!r:.60}")
            if op not in KNOWN_OPERATIONS:
                raise RuleError(f"{path}: unknown operation {op!r:.60}")
            stack.append((args, f"{path}.{op}", depth + 1))
        elif isinstance(node, float) and node != node:  # NaN never comes from JSON
            raise RuleError(f"{path}: NaN is not a JSON value")


def resolve_refs(rule: Any, evaluators: Mapping[str, Any], *, where: str) -> Any:
    """A copy of ``rule`` with every ``{"$ref": name}`` replaced by ``evaluators[name]``.

    Evaluators may reference other evaluators; a cycle or an unknown name is a RuleError.
    """

    def expand(node: Any, path: str, active: tuple[str, ...]) -> Any:
        if len(active) > MAX_RULE_DEPTH:
            raise RuleError(f"{path}: $ref chain deeper than {MAX_RULE_DEPTH}")
        if isinstance(node, list):
            return [expand(v, f"{path}[{i}]", active) for i, v in enumerate(node)]
        if not isinstance(node, dict):
            return node
        if len(node) == 1 and REF in node:
            name = node[REF]
            if not isinstance(name, str) or name not in evaluators:
                known = ", ".join(sorted(evaluators)) or "none defined"
                raise RuleError(f"{path}: unknown $ref {name!r:.60} ($evaluators: {known})")
            if name in active:
                raise RuleError(f"{path}: $ref cycle {' -> '.join((*active, name))}")
            target = copy.deepcopy(evaluators[name])
            return expand(target, f"$evaluators.{name}", (*active, name))
        return {k: expand(v, f"{path}.{k}", active) for k, v in node.items()}

    return expand(rule, where, ())
