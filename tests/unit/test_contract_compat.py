"""The compatibility classifier on a table of real schema changes, both directions."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from holdfast.contracts.compat import compare
from holdfast.contracts.diff import diff

WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 1},
        "units": {"type": "string", "enum": ["metric", "imperial", "kelvin"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["city"],
    "additionalProperties": False,
}


def edited(path: list[str], value: Any, *, delete: bool = False) -> dict[str, Any]:
    schema = copy.deepcopy(WEATHER)
    node = schema
    for part in path[:-1]:
        node = node[part]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return schema


ARGS_TABLE = [
    # (what, new schema, severity expected, path)
    ("optional field added", edited(["properties", "lang"], {"type": "string"}), "compatible",
     "lang"),
    ("required field added", {**edited(["properties", "lang"], {"type": "string"}),
                              "required": ["city", "lang"]}, "breaking", "lang"),
    ("field removed", edited(["properties", "tags"], None, delete=True), "breaking", "tags"),
    ("retyped field", edited(["properties", "days", "type"], "string"), "breaking", "days"),
    ("integer widened to number", edited(["properties", "days", "type"], "number"),
     "compatible", "days"),
    ("enum narrowed", edited(["properties", "units", "enum"], ["metric", "imperial"]),
     "breaking", "units"),
    ("enum widened", edited(["properties", "units", "enum"], ["metric", "imperial", "kelvin",
                                                               "rankine"]), "compatible", "units"),
    ("maximum tightened", edited(["properties", "days", "maximum"], 7), "breaking", "days"),
    ("maximum loosened", edited(["properties", "days", "maximum"], 30), "compatible", "days"),
    ("minLength raised", edited(["properties", "city", "minLength"], 3), "breaking", "city"),
    ("pattern added", edited(["properties", "city", "pattern"], "^[A-Z]"), "breaking", "city"),
    ("field became optional", edited(["required"], []), "compatible", "city"),
    ("existing field became required", edited(["required"], ["city", "days"]), "breaking",
     "days"),
    ("extra fields allowed", edited(["additionalProperties"], True), "compatible", "*"),
    ("array items retyped", edited(["properties", "tags", "items", "type"], "integer"),
     "breaking", "tags[]"),
    ("description only", edited(["properties", "city", "description"], "the city"), "cosmetic",
     "city"),
    ("anyOf introduced", edited(["properties", "days", "anyOf"], [{"minimum": 2}]), "breaking",
     "days"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("what", "new", "severity", "path"), ARGS_TABLE, ids=[r[0] for r in ARGS_TABLE]
)
def test_arguments_direction(what: str, new: dict[str, Any], severity: str, path: str) -> None:
    changes = compare(WEATHER, new, "input")
    assert changes, what
    assert {c.severity for c in changes} == {severity}, changes
    assert any(c.path == path for c in changes), changes


RESULT_OLD: dict[str, Any] = {
    "type": "object",
    "properties": {
        "hits": {"type": "array", "items": {"$ref": "#/$defs/hit"}},
        "status": {"enum": ["ok", "partial"]},
    },
    "required": ["hits", "status"],
    "$defs": {"hit": {"type": "object", "properties": {"title": {"type": "string"},
                                                       "url": {"type": "string"}},
                      "required": ["title", "url"]}},
}  # fmt: skip


def result_edited(fn: Any) -> dict[str, Any]:
    schema = copy.deepcopy(RESULT_OLD)
    fn(schema)
    return schema


RESULT_TABLE = [
    ("field added to result", lambda s: s["properties"].update(took={"type": "number"}),
     "compatible"),
    ("field removed from result", lambda s: s["properties"].pop("status"), "breaking"),
    ("result field may now be missing", lambda s: s.update(required=["hits"]), "breaking"),
    ("enum widened in result", lambda s: s["properties"]["status"].update(
        enum=["ok", "partial", "error"]), "breaking"),
    ("enum narrowed in result", lambda s: s["properties"]["status"].update(enum=["ok"]),
     "compatible"),
    ("field retyped behind $ref", lambda s: s["$defs"]["hit"]["properties"]["url"].update(
        type="object"), "breaking"),
]  # fmt: skip


@pytest.mark.parametrize(("what", "fn", "severity"), RESULT_TABLE, ids=[r[0] for r in RESULT_TABLE])
def test_result_direction(what: str, fn: Any, severity: str) -> None:
    changes = compare(RESULT_OLD, result_edited(fn), "output")
    assert {c.severity for c in changes} == {severity}, changes


def content(args: dict[str, Any], result: dict[str, Any], backend: str = "") -> dict[str, Any]:
    return {"args_schema": args, "result_schema": result, "backend": backend, "timeout_s": 10.0,
            "idempotent": False, "policy": "enforce"}  # fmt: skip


def test_whole_contract_verdicts_and_versions() -> None:
    base = content(WEATHER, RESULT_OLD)
    assert diff(None, base).next_version(None) == "1.0.0"
    assert diff(base, base).compat == "identical"
    assert diff(base, base).next_version("1.0.0") is None
    minor = diff(base, content(ARGS_TABLE[0][1], RESULT_OLD))
    assert (minor.compat, minor.next_version("1.2.3")) == ("compatible", "1.3.0")
    major = diff(base, content(WEATHER, result_edited(lambda s: s["properties"].pop("hits"))))
    assert (major.compat, major.next_version("1.3.0")) == ("breaking", "2.0.0")
    patch = diff(base, content(WEATHER, RESULT_OLD, backend="http://tools.internal/w"))
    assert (patch.compat, patch.next_version("2.0.0")) == ("cosmetic", "2.0.1")
    assert patch.changes[0].path == "backend"
    # a breaking and a compatible change together: breaking wins, both are explained
    mixed = diff(base, content({**ARGS_TABLE[0][1], "required": ["city", "days"]}, RESULT_OLD))
    assert mixed.compat == "breaking"
    assert {c.severity for c in mixed.changes} == {"breaking", "compatible"}


@pytest.mark.parametrize(
    ("setting", "value", "compat", "version"),
    [
        ("idempotent", True, "compatible", "2.1.0"),  # retries turned on: a behaviour change
        ("policy", "report", "compatible", "2.1.0"),
        ("backend", "http://tools.internal/w2", "cosmetic", "2.0.1"),
        ("timeout_s", 3.0, "cosmetic", "2.0.1"),
    ],
)
def test_settings_changes_bump_by_what_they_change(
    setting: str, value: Any, compat: str, version: str
) -> None:
    base = content(WEATHER, RESULT_OLD)
    verdict = diff(base, {**base, setting: value})
    assert (verdict.compat, verdict.next_version("2.0.0")) == (compat, version)
    (change,) = verdict.changes
    assert (change.path, change.what) == (setting, "setting")
    assert ("changes what the sidecar does" in change.detail) == (compat == "compatible")


def test_recursive_refs_terminate() -> None:
    tree = {"type": "object", "properties": {"kids": {"type": "array",
            "items": {"$ref": "#"}}}}  # fmt: skip
    assert compare(tree, copy.deepcopy(tree), "output") == []
