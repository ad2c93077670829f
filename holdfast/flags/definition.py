"""flagd flag-definition files: the whole file is validated, ``$ref``s resolved, or refused.

A file first passes checks equivalent to flagd's published schema (``flagd_schema``), then the
semantic ones (one value type per flag, the default among the variants, every ``$ref`` defined,
no cycles). Every problem of the file is reported, with its path.

``FlagSpec`` itself only re-runs what evaluation needs (types, known operations, no ``$ref``):
it also decodes stored records, which must stay readable when a later file check is stricter.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from holdfast.flags.flagd_schema import FILE_SCHEMA, STATES, targeting_problems
from holdfast.flags.rules import RuleError, check_rule, resolve_refs
from holdfast.names import FLAG_KEY_RE

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

FlagType = Literal["boolean", "string", "number", "object"]
State = Literal["ENABLED", "DISABLED"]
MAX_ERRORS_REPORTED: Final = 20
# A flag file as holdfastctl sends it; larger ones could not be written (and audited) in one
# etcd transaction anyway (records and requests are capped near 1 MiB).
KEY_RULE: Final = (
    "a Holdfast flag key is 1-128 characters of A-Z a-z 0-9 . _ -, starting with a letter or "
    "digit, because it names an etcd key and an OFREP URL segment (flagd allows any non-empty key)"
)


@functools.cache
def _validator() -> Draft202012Validator:
    """Built on first use: the Python jsonschema package is ~4 MB resident, and only
    holdfastctl and configsvc check flag files (a sidecar imports this module for its types)."""
    import jsonschema

    return jsonschema.Draft202012Validator(FILE_SCHEMA)


class FlagFileError(ValueError):
    """A flag file (or flag) that cannot be applied; ``problems`` lists every reason found."""

    def __init__(self, problems: list[str]) -> None:
        shown = problems[:MAX_ERRORS_REPORTED]
        more = len(problems) - len(shown)
        text = "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
        super().__init__(text)
        self.problems = problems


@dataclass(frozen=True, slots=True, kw_only=True)
class FlagSpec:
    """One self-contained flag: no ``$ref`` left, value types checked."""

    key: str
    state: State
    variants: Mapping[str, Any]
    default_variant: str | None
    targeting: Mapping[str, Any] | None = None
    metadata: Mapping[str, str | int | float | bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = flag_problems(self)
        if problems:
            raise FlagFileError(problems)

    @property
    def flag_type(self) -> FlagType:
        return value_type(next(iter(self.variants.values())))

    def to_flagd(self) -> dict[str, Any]:
        """The flag in flagd's own JSON form (``$ref``s already expanded)."""
        out: dict[str, Any] = {
            "state": self.state,
            "variants": dict(self.variants),
            "defaultVariant": self.default_variant,
        }
        if self.targeting:
            out["targeting"] = self.targeting
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out


def value_type(value: Any) -> FlagType:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    return "object"


def flag_problems(spec: FlagSpec) -> list[str]:
    where = f"flags.{spec.key}"
    problems: list[str] = []
    if not FLAG_KEY_RE.fullmatch(spec.key):
        problems.append(f"{where}: {KEY_RULE}")
    if spec.state not in STATES:
        problems.append(f"{where}.state: must be ENABLED or DISABLED")
    if not spec.variants:
        problems.append(f"{where}.variants: at least one variant is needed")
        return problems
    types = {value_type(v) for v in spec.variants.values()}
    if len(types) > 1:
        problems.append(
            f"{where}.variants: all values must have one type, found {', '.join(sorted(types))}"
        )
    for name, value in spec.variants.items():
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{where}.variants.{name}: not a finite number")
        elif value_type(value) == "object" and not isinstance(value, dict | list):
            problems.append(f"{where}.variants.{name}: unsupported value type")
    if spec.default_variant is not None and spec.default_variant not in spec.variants:
        problems.append(
            f"{where}.defaultVariant: {spec.default_variant!r:.60} is not one of its variants"
        )
    if spec.targeting:
        try:
            check_rule(dict(spec.targeting), where=f"{where}.targeting")
        except RuleError as exc:
            problems.append(str(exc))
    return problems


def parse_file(document: Any) -> tuple[list[FlagSpec], dict[str, Any]]:
    """Every flag of a flagd document, validated and self-contained, and the file's metadata.

    Raises FlagFileError listing every problem; nothing is returned for a partly valid file.
    """
    document = _flags_as_map(document)
    problems = [
        f"{_path(err.absolute_path)}: {err.message}"
        for err in sorted(_validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    ]
    if problems:
        raise FlagFileError(problems)
    evaluators: dict[str, Any] = document.get("$evaluators", {})
    file_metadata: dict[str, Any] = document.get("metadata", {})
    for name, rule in evaluators.items():
        problems.extend(targeting_problems(rule, where=f"$evaluators.{name}"))
    specs: list[FlagSpec] = []
    for key, raw in document["flags"].items():
        where = f"flags.{key}"
        shape = targeting_problems(raw.get("targeting", {}), where=f"{where}.targeting")
        if not FLAG_KEY_RE.fullmatch(key):
            shape.insert(0, f"{where}: {KEY_RULE}")
        if shape:
            problems.extend(shape)
            continue
        try:
            targeting = raw.get("targeting")
            if targeting:
                targeting = resolve_refs(targeting, evaluators, where=f"{where}.targeting")
            specs.append(
                FlagSpec(
                    key=key,
                    state=raw["state"],
                    variants=raw["variants"],
                    default_variant=raw.get("defaultVariant") or None,  # flagd: "" is no default
                    targeting=targeting or None,
                    metadata={**file_metadata, **raw.get("metadata", {})},
                )
            )
        except RuleError as exc:
            problems.append(str(exc))
        except FlagFileError as exc:
            problems.extend(exc.problems)
    if problems:
        raise FlagFileError(problems)
    if not specs:
        raise FlagFileError(["flags: the file defines no flags"])
    return specs, file_metadata


def _flags_as_map(document: Any) -> Any:
    """flagd's daemon also reads ``flags`` as an array of flags with a ``key`` each."""
    if not isinstance(document, dict) or not isinstance(document.get("flags"), list):
        return document
    flags: dict[str, Any] = {}
    problems: list[str] = []
    for i, item in enumerate(document["flags"]):
        key = item.get("key") if isinstance(item, dict) else None
        if not isinstance(key, str) or not key:
            problems.append(f"flags[{i}]: a flag in a flags array needs a non-empty string 'key'")
        elif key in flags:
            problems.append(f"flags[{i}]: flag key {key!r:.130} appears twice")
        else:
            flags[key] = {k: v for k, v in item.items() if k != "key"}
    if problems:
        raise FlagFileError(problems)
    return {**document, "flags": flags}


def _path(parts: Any) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
    return text.lstrip(".") or "(file)"
