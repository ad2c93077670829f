"""The checks of tool contracts on the chat path, pure: a model's tool call against its pinned
arguments schema, and a tool the agent declares against the pinned schema.

A declared tool differs from its contract only when its ``parameters`` accept something else:
annotations (``description``, ``title``, ``examples``, ``default``, ``deprecated``...) are the
agent's to word, and the comparison is the one that classifies contract versions
(``holdfast.contracts.compat``), so "cosmetic" means the same in both places.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from holdfast.contracts.compat import compare
from holdfast.contracts.schema import canonical
from holdfast.dialects import ToolCall
from holdfast.json_limits import provider_json
from sidecar.contracts.book import Compiled, Pinned


@dataclass(frozen=True, slots=True)
class Violation:
    pinned: Pinned
    kind: str  # declared | call
    detail: str

    @property
    def label(self) -> str:
        return f"{self.pinned.ref} {self.kind}"


def check_call(call: ToolCall, pins: dict[str, Pinned]) -> Violation | None:
    """The violation of one model tool call against its pinned contract, if any."""
    pinned = pins.get(call.name)
    if pinned is None or pinned.compiled is None:
        return None
    if call.truncated:
        return Violation(pinned, "call", "arguments are larger than the sidecar checks")
    arguments = provider_json(call.arguments, "contract_arguments") if call.arguments else {}
    if arguments is None:
        return Violation(pinned, "call", "arguments are not JSON (or nest too deep)")
    errors = pinned.compiled.args_errors(arguments)
    return Violation(pinned, "call", "; ".join(errors)) if errors else None


def declared_mismatch(compiled: Compiled, declared: Any) -> str | None:
    """How declared parameters differ from the pinned schema; None if only in annotations
    (``description``, ``title``, ``examples``...), which change nothing a call may carry."""
    try:
        if canonical(declared) == compiled.args_canonical:
            return None
        changes = compare(compiled.contract.args_schema, declared, "input")
    except (TypeError, ValueError, RecursionError):  # e.g. "maximum": "ten"
        return "parameters differ in a way that cannot be analysed"
    changes = [c for c in changes if c.severity != "cosmetic"]
    if not changes:
        return None
    worst = sorted(changes, key=lambda c: c.severity != "breaking")
    more = f" (and {len(changes) - 1} more)" if len(changes) > 1 else ""
    return f"{worst[0].path}: {worst[0].detail}{more}"
