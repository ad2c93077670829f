"""The verdict over two whole contract versions: schemas in their directions, plus settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from holdfast.contracts import semver
from holdfast.contracts.compat import Change, compare

CompatClass = Literal["initial", "identical", "breaking", "compatible", "cosmetic"]
BUMP: Final[dict[str, semver.Bump]] = {
    "breaking": "major", "compatible": "minor", "cosmetic": "patch"
}  # fmt: skip
SETTINGS: Final = ("backend", "timeout_s", "idempotent", "policy")


@dataclass(frozen=True, slots=True)
class ContractDiff:
    compat: CompatClass
    changes: tuple[Change, ...]

    def next_version(self, previous: str | None) -> str | None:
        """The version this content gets; None when nothing changed (identical)."""
        if previous is None:
            return semver.FIRST
        if self.compat == "identical":
            return None
        return semver.bump(previous, BUMP[self.compat])

    def to_json(self) -> dict[str, Any]:
        return {"compat": self.compat, "changes": [c.to_json() for c in self.changes]}


def diff(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> ContractDiff:
    """Compare two contract contents (``args_schema``, ``result_schema`` and the settings)."""
    if old is None:
        return ContractDiff("initial", ())
    changes = [
        *compare(old["args_schema"], new["args_schema"], "input", prefix="args"),
        *compare(old["result_schema"], new["result_schema"], "output", prefix="result"),
    ]
    for name in SETTINGS:
        if old.get(name) != new.get(name):
            detail = f"{old.get(name)!r:.100} -> {new.get(name)!r:.100}"
            changes.append(Change(name, "setting", "cosmetic", detail))
    severities = {c.severity for c in changes}
    if "breaking" in severities:
        return ContractDiff("breaking", tuple(changes))
    if "compatible" in severities:
        return ContractDiff("compatible", tuple(changes))
    return ContractDiff("cosmetic" if changes else "identical", tuple(changes))
