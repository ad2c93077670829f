"""flagd's published schema, both directions: files it accepts pass, files it refuses do not.

Each case was checked against flagd-schemas' json/flags.json + targeting.json (v0, Draft 7) when
it was written (the flags array against flagd.json, the daemon's superset); the few deliberate
differences are listed at the end, each with its reason.
"""

from __future__ import annotations

from typing import Any

import pytest

from holdfast.flags.definition import FlagFileError, parse_file

BOOL = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"}


def flag(**over: Any) -> dict[str, Any]:
    return {"flags": {"f": {**BOOL, **over}}}


def rule(targeting: Any) -> dict[str, Any]:
    return flag(targeting=targeting)


IF_ON = ["on", "off"]

ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    (
        "top-level $schema and $comment",
        {"$schema": "https://flagd.dev/schema/v0/flags.json", "$comment": "ops team", **flag()},
    ),
    ("flag description and unknown properties", flag(description="why", owner="core")),
    ("flag set metadata", {**flag(), "metadata": {"flagSetId": "core", "version": "7", "n": 1}}),
    ("numeric flagSetId (draft 7 ignores $ref siblings)", {**flag(), "metadata": {"flagSetId": 7}}),
    ("flag metadata", flag(metadata={"team": "core", "ticket": 42, "temporary": True})),
    ("DISABLED state", flag(state="DISABLED")),
    ("null defaultVariant", flag(defaultVariant=None)),
    ("no defaultVariant", {"flags": {"f": {"state": "ENABLED", "variants": {"a": 1}}}}),
    ("empty defaultVariant (flagd: code default)", flag(defaultVariant="")),
    (
        "number variants, int and float",
        {
            "flags": {
                "f": {"state": "ENABLED", "variants": {"a": 1, "b": 2.5}, "defaultVariant": "a"}
            }
        },
    ),
    (
        "object variants",
        {
            "flags": {
                "f": {"state": "ENABLED", "variants": {"a": {"x": [1]}}, "defaultVariant": "a"}
            }
        },
    ),
    ("empty targeting", rule({})),
    ("if / == / var", rule({"if": [{"==": [{"var": "tier"}, "gold"]}, *IF_ON]})),
    ("< between", rule({"if": [{"<": [1, {"var": "n"}, 10]}, *IF_ON]})),
    ("in with a list", rule({"if": [{"in": [{"var": "t"}, ["a", "b"]]}, *IF_ON]})),
    ("! unary forms", rule({"if": [{"!": {"var": "x"}}, "on", {"!!": [{"var": "y"}]}]})),
    ("var with a default", rule({"if": [{"var": ["region", "eu"]}, *IF_ON]})),
    ("$flagd.flagKey", rule({"if": [{"==": [{"var": "$flagd.flagKey"}, "f"]}, *IF_ON]})),
    (
        "missing / missing_some",
        rule(
            {"if": [{"missing": ["a", "b"]}, "off", {"missing_some": [1, ["c", "d"]]}, "off", "on"]}
        ),
    ),
    (
        "cat and substr",
        rule({"if": [{"==": [{"substr": [{"cat": ["a", "b"]}, 1]}, "b"]}, *IF_ON]}),
    ),
    (
        "reduce and map",
        rule(
            {
                "if": [
                    {
                        ">": [
                            {
                                "reduce": [
                                    {"map": [[1, 2], {"var": ""}]},
                                    {"+": [{"var": "current"}, 1]},
                                    0,
                                ]
                            },
                            1,
                        ]
                    },
                    *IF_ON,
                ]
            }
        ),
    ),
    (
        "starts_with / ends_with",
        rule(
            {
                "if": [
                    {
                        "and": [
                            {"starts_with": [{"var": "e"}, "a"]},
                            {"ends_with": [{"var": "e"}, ".io"]},
                        ]
                    },
                    *IF_ON,
                ]
            }
        ),
    ),
    ("sem_ver with var", rule({"if": [{"sem_ver": [{"var": "v"}, ">=", "1.2.0"]}, *IF_ON]})),
    ("sem_ver pre-release", rule({"if": [{"sem_ver": ["1.0.0-rc.1", "<", {"var": "v"}]}, *IF_ON]})),
    ("fractional shorthand", rule({"fractional": [["on", 50], ["off", 50]]})),
    ("fractional without weights", rule({"fractional": [["on"], ["off"]]})),
    ("fractional bucketing rule", rule({"fractional": [{"var": "email"}, ["on", 1], ["off", 3]]})),
    ("fractional computed weight", rule({"fractional": [["on", {"var": "pct"}], ["off", 100]]})),
    ("fractional null variant", rule({"fractional": [["on", 5], [None, 95]]})),
    (
        "$ref as argument",
        {
            "$evaluators": {"gold": {"==": [{"var": "tier"}, "gold"]}},
            **rule({"if": [{"$ref": "gold"}, *IF_ON]}),
        },
    ),
    ("flagd daemon's flags array", {"flags": [{"key": "f", **BOOL}, {"key": "g", **BOOL}]}),
    (
        "evaluator using an evaluator",
        {
            "$evaluators": {"a": {"var": "x"}, "b": {"!": {"$ref": "a"}}},
            **rule({"if": [{"$ref": "b"}, *IF_ON]}),
        },
    ),
]

REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("no flags", {}, "'flags' is a required property"),
    ("flags not an object", {"flags": "x"}, "flags: 'x' is not of type 'object'"),
    ("flag without state", {"flags": {"f": {"variants": {"a": 1}}}}, "'state' is a required"),
    ("state ON", flag(state="ON"), "flags.f.state"),
    ("no variants", {"flags": {"f": {"state": "ENABLED"}}}, "'variants' is a required"),
    ("empty variants", flag(variants={}), "flags.f.variants"),
    (
        "array variants",
        flag(variants={"a": [1], "b": [2]}, defaultVariant="a"),
        "flags.f.variants.a",
    ),
    ("mixed variant types", flag(variants={"a": 1, "b": "x"}, defaultVariant="a"), "one type"),
    ("empty variant name", flag(variants={"": True}, defaultVariant=None), "flags.f.variants"),
    ("defaultVariant a number", flag(defaultVariant=1), "flags.f.defaultVariant"),
    ("metadata value an object", flag(metadata={"a": {"b": 1}}), "flags.f.metadata.a"),
    ("targeting not an object", flag(targeting=["if"]), "flags.f.targeting"),
    ("evaluator not an object", {"$evaluators": {"x": 1}, **flag()}, "$evaluators.x"),
    ("unknown operation", rule({"bogus": [1]}), "unknown operation 'bogus'"),
    ("log", rule({"log": ["x"]}), "unknown operation 'log'"),
    ("?: (not in flagd's set)", rule({"?:": [True, "on", "off"]}), "unknown operation '?:'"),
    ("== with one argument", rule({"if": [{"==": [1]}, *IF_ON]}), "if[0].==: takes an array of 2"),
    ("== with three", rule({"if": [{"==": [1, 2, 3]}, *IF_ON]}), "takes an array of 2 arguments"),
    ("if not an array", rule({"if": "on"}), "flags.f.targeting.if: takes an array"),
    ("empty object argument", rule({"if": [{}, *IF_ON]}), "an empty object is not"),
    ("missing with a string", rule({"if": [{"missing": "a"}, *IF_ON]}), "missing: takes an array"),
    ("missing_some shape", rule({"if": [{"missing_some": [["a"], 1]}, *IF_ON]}), "missing_some"),
    ("$flagd.other", rule({"if": [{"var": "$flagd.other"}, *IF_ON]}), "flagd defines only"),
    ("sem_ver one argument", rule({"if": [{"sem_ver": [1]}, *IF_ON]}), "[version, operator"),
    (
        "sem_ver bad operator",
        rule({"if": [{"sem_ver": [{"var": "v"}, "~=", "1.0.0"]}, *IF_ON]}),
        "operator must be one of",
    ),
    (
        "sem_ver partial literal",
        rule({"if": [{"sem_ver": [{"var": "v"}, ">", "1.2"]}, *IF_ON]}),
        "not a full semantic version",
    ),
    (
        "sem_ver v-prefixed literal",
        rule({"if": [{"sem_ver": ["v1.0.0", "=", {"var": "v"}]}, *IF_ON]}),
        "not a full semantic",
    ),
    (
        "sem_ver number operand",
        rule({"if": [{"sem_ver": [1, "=", {"var": "v"}]}, *IF_ON]}),
        "must be a version string",
    ),
    (
        "starts_with a number",
        rule({"if": [{"starts_with": [{"var": "e"}, 1]}, *IF_ON]}),
        "starts_with[1]: expected a JsonLogic rule",
    ),
    ("ends_with one argument", rule({"if": [{"ends_with": ["a"]}, *IF_ON]}), "ends_with: takes"),
    (
        "fractional string weight",
        rule({"fractional": [["on", "50"], ["off", 50]]}),
        "a weight is a non-negative integer",
    ),
    (
        "fractional decimal weight",
        rule({"fractional": [["on", 0.5], ["off", 50]]}),
        "a weight is a non-negative integer",
    ),
    (
        "fractional negative weight",
        rule({"fractional": [["on", -1], ["off", 50]]}),
        "a weight is a non-negative integer",
    ),
    ("fractional null weight", rule({"fractional": [["on", None], ["off", 50]]}), "a weight"),
    ("fractional entry too long", rule({"fractional": [["on", 1, 2]]}), "a distribution is"),
    ("fractional empty entry", rule({"fractional": [[], ["off"]]}), "a distribution is"),
    (
        "fractional literal bucketing",
        rule({"fractional": ["email", ["on", 1]]}),
        "bucketing value must be a rule",
    ),
    ("fractional not an array", rule({"fractional": {"var": "x"}}), "fractional: takes"),
    ("flags array item without key", {"flags": [BOOL]}, "flags[0]: a flag in a flags array"),
    (
        "flags array duplicate key",
        {"flags": [{"key": "f", **BOOL}, {"key": "f", **BOOL}]},
        "appears twice",
    ),
    ("bad evaluator rule", {"$evaluators": {"x": {"==": [1]}}, **flag()}, "$evaluators.x.=="),
]

# Where Holdfast deliberately differs from flagd's schema (see README, "Feature flags").
DIFFERENCES_REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("key unusable in etcd/OFREP", {"flags": {"bad/key": BOOL}}, "names an etcd key"),
    (
        "several operations in one object",
        rule({"if": [{"==": [1, 1], "!=": [1, 2]}, *IF_ON]}),
        "exactly one operation",
    ),
    ("more than 100 flags", {"flags": {f"f{i}": BOOL for i in range(101)}}, "too many properties"),
]
DIFFERENCES_ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    (
        "top-level $ref",
        {"$evaluators": {"gold": {"if": [{"var": "gold"}, *IF_ON]}}, **rule({"$ref": "gold"})},
    ),
]


@pytest.mark.parametrize(("name", "document"), ACCEPTED + DIFFERENCES_ACCEPTED,
                         ids=[c[0] for c in ACCEPTED + DIFFERENCES_ACCEPTED])  # fmt: skip
def test_files_flagd_accepts_are_accepted(name: str, document: dict[str, Any]) -> None:
    specs, _ = parse_file(document)
    flags = document["flags"]
    assert [s.key for s in specs] == (
        [f["key"] for f in flags] if isinstance(flags, list) else list(flags)
    )


@pytest.mark.parametrize(("name", "document", "needle"), REFUSED + DIFFERENCES_REFUSED,
                         ids=[c[0] for c in REFUSED + DIFFERENCES_REFUSED])  # fmt: skip
def test_files_flagd_refuses_are_refused(name: str, document: dict[str, Any], needle: str) -> None:
    with pytest.raises(FlagFileError) as info:
        parse_file(document)
    assert needle in str(info.value), info.value.problems


def test_empty_default_variant_is_no_default() -> None:
    (spec,), _ = parse_file(flag(defaultVariant=""))
    assert spec.default_variant is None
    assert spec.to_flagd()["defaultVariant"] is None


def test_unknown_properties_are_not_stored() -> None:
    (spec,), _ = parse_file({"$comment": "x", **flag(description="why")})
    assert "description" not in spec.to_flagd()
