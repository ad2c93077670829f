"""Compatibility of one contract version with the previous one, field by field. Pure.

The direction decides what "compatible" means:

* ``input`` (tool arguments, written by the model or agent, read by the tool): the new schema
  must accept everything the old one accepted -- adding an optional field or widening an enum
  is compatible; a removed or retyped field, a new required field, a narrowed enum or a
  tightened bound is breaking.
* ``output`` (tool results, written by the backend, read by the agent): everything the new
  schema allows must still be acceptable to a reader of the old one -- adding a field or
  narrowing an enum is compatible; a removed or retyped field, a field that may now be missing,
  a widened enum or a loosened bound is breaking.

Changes this module cannot reason about (``anyOf``, ``if``/``then``, ``patternProperties``...)
are reported as breaking: a false alarm costs a major version, a missed break costs an agent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from holdfast.contracts.schema import canonical

Direction = Literal["input", "output"]
Severity = Literal["breaking", "compatible", "cosmetic"]

ANNOTATIONS: Final = frozenset(
    {"title", "description", "examples", "default", "$comment", "deprecated", "readOnly",
     "writeOnly", "$schema", "$id", "$anchor"}
)  # fmt: skip
# Definitions are compared where they are used (through $ref), not as a block.
SKIPPED: Final = frozenset({"$defs", "definitions"})
LOWER_BOUNDS: Final = (
    "minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties", "minContains"
)  # fmt: skip
UPPER_BOUNDS: Final = (
    "maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties", "maxContains"
)  # fmt: skip
HANDLED: Final = frozenset(
    {"type", "enum", "const", "properties", "required", "additionalProperties", "items",
     "pattern", "format", "uniqueItems", "multipleOf", "$ref", *LOWER_BOUNDS, *UPPER_BOUNDS}
)  # fmt: skip
MAX_REF_HOPS: Final = 32


@dataclass(frozen=True, slots=True)
class Change:
    path: str
    what: str
    severity: Severity
    detail: str

    def to_json(self) -> dict[str, str]:
        return {"path": self.path, "what": self.what, "severity": self.severity,
                "detail": self.detail}  # fmt: skip


class _Walk:
    def __init__(self, old_root: Any, new_root: Any, direction: Direction) -> None:
        self.roots = (old_root, new_root)
        self.direction = direction
        self.changes: list[Change] = []
        self._seen: set[tuple[int, int]] = set()

    def add(self, path: str, what: str, severity: Severity, detail: str) -> None:
        self.changes.append(Change(path or "(root)", what, severity, detail))

    def tighten(self, path: str, what: str, detail: str) -> None:
        """The new schema accepts less than the old one."""
        self.add(path, what, "breaking" if self.direction == "input" else "compatible", detail)

    def loosen(self, path: str, what: str, detail: str) -> None:
        """The new schema accepts more than the old one."""
        self.add(path, what, "compatible" if self.direction == "input" else "breaking", detail)

    def _deref(self, node: Any, root: Any) -> Any:
        for _ in range(MAX_REF_HOPS):
            if not isinstance(node, dict) or not isinstance(node.get("$ref"), str):
                return node
            target: Any = root
            for part in node["$ref"].lstrip("#").split("/")[1:]:
                part = part.replace("~1", "/").replace("~0", "~")
                if isinstance(target, dict) and part in target:
                    target = target[part]
                elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                    target = target[int(part)]
                else:
                    return node
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            node = {**target, **siblings} if isinstance(target, dict) else target
        return node

    def walk(self, old: Any, new: Any, path: str) -> None:
        old, new = self._deref(old, self.roots[0]), self._deref(new, self.roots[1])
        key = (id(old), id(new))
        if key in self._seen:
            return
        self._seen.add(key)
        if (
            isinstance(old, bool)
            or isinstance(new, bool)
            or not (isinstance(old, dict) and isinstance(new, dict))
        ):
            if canonical(old) != canonical(new):
                (self.loosen if new is True or new == {} else self.tighten)(
                    path, "schema", f"schema changed from {_short(old)} to {_short(new)}"
                )
            return
        self._types(old, new, path)
        self._enum(old, new, path)
        self._bounds(old, new, path)
        self._text_rule(old, new, path, "pattern")
        self._text_rule(old, new, path, "format")
        self._object(old, new, path)
        if "items" in old or "items" in new:
            self.walk(old.get("items", True), new.get("items", True), f"{path}[]")
        for kw in sorted((set(old) | set(new)) - HANDLED - SKIPPED):
            if canonical(old.get(kw)) == canonical(new.get(kw)):
                continue
            if kw in ANNOTATIONS:
                self.add(path, kw, "cosmetic", f"{kw} changed")
            else:
                self.add(path, kw, "breaking", f"{kw} changed (not analysed: treated as breaking)")

    def _types(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        before, after = _types(old.get("type")), _types(new.get("type"))
        if before == after:
            return
        if after is None or (before is not None and _covers(after, before)):
            self.loosen(path, "type", f"type widened from {_fmt(before)} to {_fmt(after)}")
        elif before is None or _covers(before, after):
            self.tighten(path, "type", f"type narrowed from {_fmt(before)} to {_fmt(after)}")
        else:
            self.add(path, "type", "breaking", f"retyped from {_fmt(before)} to {_fmt(after)}")

    def _enum(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        before, after = _values(old), _values(new)
        if before == after:
            return
        if after is None:
            self.loosen(path, "enum", "enum removed: any value is now allowed")
        elif before is None:
            self.tighten(path, "enum", f"now limited to {_list(after)}")
        else:
            if removed := before - after:
                self.tighten(path, "enum", f"enum narrowed: {_list(removed)} no longer allowed")
            if added := after - before:
                self.loosen(path, "enum", f"enum widened: {_list(added)} now allowed")

    def _bounds(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        for kw in (*LOWER_BOUNDS, *UPPER_BOUNDS):
            a, b = old.get(kw), new.get(kw)
            if a == b:
                continue
            lower = kw in LOWER_BOUNDS
            if b is None:
                self.loosen(path, kw, f"{kw} {a} removed")
            elif a is None or (b > a if lower else b < a):
                self.tighten(path, kw, f"{kw} {'added' if a is None else f'{a} ->'} {b}")
            else:
                self.loosen(path, kw, f"{kw} {a} -> {b}")
        if bool(old.get("uniqueItems")) != bool(new.get("uniqueItems")):
            (self.tighten if new.get("uniqueItems") else self.loosen)(
                path, "uniqueItems", f"uniqueItems now {bool(new.get('uniqueItems'))}"
            )
        a, b = old.get("multipleOf"), new.get("multipleOf")
        if a != b:
            if b is None or (a is not None and a % b == 0):
                self.loosen(path, "multipleOf", f"multipleOf {a} -> {b}")
            else:
                self.tighten(path, "multipleOf", f"multipleOf {a} -> {b}")

    def _text_rule(
        self, old: Mapping[str, Any], new: Mapping[str, Any], path: str, kw: str
    ) -> None:
        a, b = old.get(kw), new.get(kw)
        if a == b:
            return
        if a is None:
            self.tighten(path, kw, f"{kw} {b!r:.80} added")
        elif b is None:
            self.loosen(path, kw, f"{kw} {a!r:.80} removed")
        else:
            self.add(path, kw, "breaking", f"{kw} changed from {a!r:.80} to {b!r:.80}")

    def _object(self, old: Mapping[str, Any], new: Mapping[str, Any], path: str) -> None:
        props_a, props_b = old.get("properties") or {}, new.get("properties") or {}
        req_a, req_b = set(old.get("required") or ()), set(new.get("required") or ())
        for name in sorted(set(props_a) | set(props_b)):
            where = f"{path}.{name}" if path else name
            if name not in props_b:
                self.add(where, "removed", "breaking", "field removed")
            elif name not in props_a:
                if self.direction == "input" and name in req_b:
                    self.add(where, "added", "breaking", "new required field")
                else:
                    kind = "required" if name in req_b else "optional"
                    self.add(where, "added", "compatible", f"{kind} field added")
            else:
                self.walk(props_a[name], props_b[name], where)
        for name in sorted(req_b - req_a):
            if name in props_a or name not in props_b:
                where = f"{path}.{name}" if path else name
                self.tighten(where, "required", "field became required")
        for name in sorted(req_a - req_b):
            if name in props_b:
                where = f"{path}.{name}" if path else name
                self.loosen(where, "required", "field became optional (may now be missing)")
        extra_a, extra_b = (
            old.get("additionalProperties", True),
            new.get("additionalProperties", True),
        )
        if canonical(extra_a) != canonical(extra_b):
            self.walk(extra_a, extra_b, f"{path}.*" if path else "*")


def _types(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    names = frozenset([value] if isinstance(value, str) else value)
    return names | {"integer"} if "number" in names else names


def _covers(wide: frozenset[str], narrow: frozenset[str]) -> bool:
    return narrow <= wide


def _fmt(types: frozenset[str] | None) -> str:
    if types is None:
        return "any"
    shown = sorted(types - {"integer"} if "number" in types else types)
    return "|".join(shown)


def _values(schema: Mapping[str, Any]) -> frozenset[bytes] | None:
    if "const" in schema:
        return frozenset({canonical(schema["const"])})
    enum = schema.get("enum")
    return frozenset(canonical(v) for v in enum) if isinstance(enum, list) else None


def _list(values: frozenset[bytes]) -> str:
    return ", ".join(sorted(v.decode() for v in values))


def _short(value: Any) -> str:
    text = canonical(value).decode()
    return text if len(text) <= 60 else text[:59] + "…"


def compare(old: Any, new: Any, direction: Direction, *, prefix: str = "") -> list[Change]:
    """Every difference between two schemas, each classified for ``direction``."""
    walk = _Walk(old, new, direction)
    walk.walk(old, new, "")
    if not prefix:
        return walk.changes
    return [
        Change(f"{prefix}.{c.path}" if c.path != "(root)" else prefix, c.what, c.severity, c.detail)
        for c in walk.changes
    ]
