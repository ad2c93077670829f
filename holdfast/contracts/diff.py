"""The verdict over two whole contract versions: schemas in their directions, plus settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from holdfast.contracts import semver
from holdfast.contracts.compat import Change, Severity, compare

CompatClass = Literal["initial", "identical", "breaking", "compatible", "cosmetic"]
BUMP: Final[dict[str, semver.Bump]] = {
    "breaking": "major", "compatible": "minor", "cosmetic": "patch"
}  # fmt: skip
SETTINGS: Final = ("backend", "timeout_s", "idempotent", "policy")
# Settings that change what the sidecar does with the same calls: ``idempotent`` turns retries
# on or off, ``policy`` decides whether a violation is refused, rewritten or only reported: more
# than a patch to whoever reads the version number, so a minor bump. Where the backend runs and
# how long it may take are operational tuning (patch).
BEHAVIOUR: Final = frozenset({"idempotent", "policy"})


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
            if name in BEHAVIOUR:
                detail += " (changes what the sidecar does)"
            severity: Severity = "compatible" if name in BEHAVIOUR else "cosmetic"
            changes.append(Change(name, "setting", severity, detail))
    severities = {c.severity for c in changes}
    if "breaking" in severities:
        return ContractDiff("breaking", tuple(changes))
    if "compatible" in severities:
        return ContractDiff("compatible", tuple(changes))
    return ContractDiff("cosmetic" if changes else "identical", tuple(changes))
