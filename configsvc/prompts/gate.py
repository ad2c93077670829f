"""What the evaluation gate decides, and how two prompt versions differ (pure; no I/O)."""

from __future__ import annotations

import difflib
from typing import Any, Final

from holdfast.keyspace.prompt import Evaluation, PromptVersion

MAX_DIFF_LINES: Final = 2000


def gate_problem(ev: Evaluation | None, ref: str, *, gate: float, min_cases: int) -> str | None:
    """Why an evaluation does not pass the gate; None when it does."""
    if ev is None:
        return f"{ref} has not been evaluated (`holdfastctl prompt eval`)"
    if ev.total < min_cases:
        return (
            f"{ref} was evaluated on {ev.total} case(s) (release {ev.agent}/{ev.release}); "
            f"the gate needs at least {min_cases}"
        )
    if ev.pass_rate < gate:
        return (
            f"{ref} passed {ev.passed}/{ev.total} cases ({ev.pass_rate:.0%}) on "
            f"release {ev.agent}/{ev.release}, below the gate of {gate:.0%}"
        )
    return None


def text_diff(name: str, a: PromptVersion, b: PromptVersion) -> dict[str, Any]:
    """``prompt diff``: a unified diff of the texts and the variables added or removed."""
    lines = list(
        difflib.unified_diff(
            a.text.splitlines(keepends=True),
            b.text.splitlines(keepends=True),
            fromfile=a.ref,
            tofile=b.ref,
        )
    )
    added = sorted(set(b.template.variables) - set(a.template.variables))
    removed = sorted(set(a.template.variables) - set(b.template.variables))
    return {
        "name": name,
        "from": int(a.version),
        "to": int(b.version),
        "identical": a.text == b.text,
        "diff": "".join(lines[:MAX_DIFF_LINES]),
        "truncated": len(lines) > MAX_DIFF_LINES,
        "variables_added": added,
        "variables_removed": removed,
    }
