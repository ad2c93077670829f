"""Flag evaluation: every operator, flagd's published bucketing vectors, reasons, distribution."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from holdfast.flags.custom_ops import bucket, parse_version
from holdfast.flags.definition import FlagSpec
from holdfast.flags.evaluate import evaluate

COLORS = {"red": "#FF0000", "blue": "#0000FF", "green": "#00FF00", "yellow": "#FFFF00"}
QUARTERS = [["red", 25], ["blue", 25], ["green", 25], ["yellow", 25]]


def spec(targeting: Any = None, key: str = "f", **kw: Any) -> FlagSpec:
    base: dict[str, Any] = {
        "key": key,
        "state": "ENABLED",
        "variants": {"on": True, "off": False},
        "default_variant": "off",
        "targeting": targeting,
    }
    return FlagSpec(**{**base, **kw})


def variant(s: FlagSpec, ctx: dict[str, Any]) -> str | None:
    return evaluate(s, ctx, now=1_700_000_000).variant


def rule(cond: Any) -> FlagSpec:
    return spec({"if": [cond, "on", "off"]})


@pytest.mark.parametrize(
    ("cond", "ctx", "expected"),
    [
        ({"==": [{"var": "tier"}, "gold"]}, {"tier": "gold"}, "on"),
        ({"==": [{"var": "tier"}, "gold"]}, {"tier": "tin"}, "off"),
        ({"!=": [{"var": "tier"}, "gold"]}, {"tier": "tin"}, "on"),
        ({"<": [{"var": "age"}, 18]}, {"age": 17}, "on"),
        ({"<": [{"var": "age"}, 18]}, {"age": 18}, "off"),
        ({"in": [{"var": "tenant"}, ["acme", "globex"]]}, {"tenant": "acme"}, "on"),
        ({"in": ["@faas.com", {"var": "email"}]}, {"email": "x@faas.com"}, "on"),
        ({"and": [{"var": "a"}, {"var": "b"}]}, {"a": True, "b": False}, "off"),
        ({"or": [{"var": "a"}, {"var": "b"}]}, {"a": False, "b": True}, "on"),
        ({"!": {"var": "a"}}, {"a": False}, "on"),
        ({"==": [{"var": ["region", "eu"]}, "eu"]}, {}, "on"),  # var with a default
        ({"==": [{"var": "user.plan"}, "pro"]}, {"user": {"plan": "pro"}}, "on"),
        ({"starts_with": [{"var": "email"}, "admin"]}, {"email": "admin@x.io"}, "on"),
        ({"starts_with": [{"var": "email"}, "admin"]}, {"email": "bob@x.io"}, "off"),
        ({"ends_with": [{"var": "email"}, "@x.io"]}, {"email": "bob@x.io"}, "on"),
        ({"ends_with": [{"var": "n"}, "1"]}, {"n": 1}, "off"),  # non-string: no match
        ({"sem_ver": [{"var": "v"}, ">=", "1.2.0"]}, {"v": "1.10.0"}, "on"),
        ({"sem_ver": [{"var": "v"}, "<", "1.2.0"]}, {"v": "v1.1"}, "on"),
        ({"sem_ver": [{"var": "v"}, "^", "2.0.0"]}, {"v": "2.9.1"}, "on"),
        ({"sem_ver": [{"var": "v"}, "~", "2.1.0"]}, {"v": "2.2.0"}, "off"),
        ({"sem_ver": [{"var": "v"}, "=", "1.0.0"]}, {"v": "not-a-version"}, "off"),
        ({"sem_ver": [{"var": "v"}, "?", "1.0.0"]}, {"v": "1.0.0"}, "off"),
        ({"==": [{"var": "$flagd.flagKey"}, "f"]}, {}, "on"),
    ],
)
def test_operators(cond: Any, ctx: dict[str, Any], expected: str) -> None:
    assert variant(rule(cond), ctx) == expected


def test_if_chain_and_reasons() -> None:
    s = spec({"if": [{"==": [{"var": "t"}, "a"]}, "on", {"==": [{"var": "t"}, "b"]}, "off", None]})
    assert evaluate(s, {"t": "a"}, now=0).reason == "TARGETING_MATCH"
    assert evaluate(s, {"t": "z"}, now=0).reason == "DEFAULT"
    assert evaluate(spec(), {}, now=0).reason == "STATIC"
    killed = dataclasses.replace(s, state="DISABLED")
    result = evaluate(killed, {"t": "a"}, now=0)
    assert (result.reason, result.variant, result.value) == ("DISABLED", "off", False)


def test_targeting_errors() -> None:
    bad = spec({"if": [True, "nope", "off"]})
    result = evaluate(bad, {}, now=0)
    assert (result.reason, result.error_code) == ("ERROR", "PARSE_ERROR")
    broken = spec({"/": [1, {"var": "zero"}]})
    assert evaluate(broken, {"zero": 0}, now=0).error_code == "GENERAL"


def test_boolean_result_maps_to_variant_names() -> None:
    s = spec(
        {"==": [{"var": "x"}, 1]}, variants={"true": "yes", "false": "no"}, default_variant="false"
    )
    assert evaluate(s, {"x": 1}, now=0).value == "yes"


def test_no_default_variant_means_code_default() -> None:
    s = spec(None, default_variant=None)
    result = evaluate(s, {}, now=0)
    assert (result.reason, result.variant, result.failed) == ("DEFAULT", None, False)


# Published expectations of flagd's own fractional tests (core/pkg/evaluator/fractional_test.go).
@pytest.mark.parametrize(
    ("seed", "email", "expected"),
    [
        ("flagkey", "rachel@faas.com", "blue"),
        ("flagkey", "monica@faas.com", "yellow"),
        ("flagkey", "joey@faas.com", "red"),
        ("flagkey", "ross@faas.com", "blue"),
        ("my-seed", "rachel@faas.com", "green"),
        ("my-seed", "monica@faas.com", "red"),
        ("my-seed", "joey@faas.com", "blue"),
        ("my-seed", "ross@faas.com", "green"),
    ],
)
def test_fractional_matches_flagd(seed: str, email: str, expected: str) -> None:
    first = {"var": "$flagd.flagKey"} if seed == "flagkey" else seed
    s = spec(
        {"fractional": [{"cat": [first, {"var": "email"}]}, *QUARTERS]},
        key="headerColor",
        variants=COLORS,
        default_variant="red",
    )
    result = evaluate(s, {"email": email}, now=0)
    assert (result.variant, result.reason) == (expected, "SPLIT")


def test_fractional_targeting_key_and_literal_bucket_like_flagd() -> None:
    halves = spec(
        {"fractional": [["blue", 50], ["green", 50]]},
        key="headerColor",
        variants=COLORS,
        default_variant="red",
    )
    assert variant(halves, {"targetingKey": "foo@foo.com"}) == "green"
    assert evaluate(halves, {}, now=0).reason == "DEFAULT"  # no targeting key: no split
    literal = dataclasses.replace(
        halves,
        targeting={"fractional": ["email", ["red", 50], ["blue", 25], ["green", 25]]},
    )
    assert variant(literal, {"email": "test4@faas.com"}) == "green"
    missing_var = dataclasses.replace(
        halves, targeting={"fractional": [{"var": "email"}, ["red", 50], ["blue", 50]]}
    )
    assert variant(missing_var, {"targetingKey": "foo@foo.com"}) == "blue"


def test_fractional_bad_weights_serve_default() -> None:
    s = spec({"fractional": [["on", 1.5], ["off", 1]]})
    assert evaluate(s, {"targetingKey": "k"}, now=0).reason == "DEFAULT"
    too_heavy = spec({"fractional": [["on", 2**31], ["off", 1]]})
    assert evaluate(too_heavy, {"targetingKey": "k"}, now=0).reason == "DEFAULT"


def test_fractional_computed_weights_clamp_negative_to_zero() -> None:
    # flagd >= 0.15: a weight computed by a rule (a time-based rollout) may go below zero
    s = spec({"fractional": [["on", {"-": [{"var": "pct"}, 10]}], ["off", {"var": "rest"}]]})
    early = [evaluate(s, {"targetingKey": f"u{i}", "pct": 5, "rest": 9}, now=0) for i in range(50)]
    assert {(r.variant, r.reason) for r in early} == {("off", "SPLIT")}
    later = [variant(s, {"targetingKey": f"u{i}", "pct": 60, "rest": 50}) for i in range(50)]
    assert set(later) == {"on", "off"}


def test_fractional_distribution_chi_square() -> None:
    weights = [10, 20, 30, 40]
    n = 100_000
    counts = [0, 0, 0, 0]
    for i in range(n):
        counts[bucket(f"rollout-user-{i}", weights)] += 1
    expected = [n * w / 100 for w in weights]
    chi2 = sum((c - e) ** 2 / e for c, e in zip(counts, expected, strict=True))
    assert chi2 < 16.27  # p = 0.001 with 3 degrees of freedom


def test_parse_version_leniency() -> None:
    assert str(parse_version("v1.2")) == "1.2.0"
    assert str(parse_version("1-rc.1")) == "1.0.0-rc.1"
    assert parse_version(True) is None
