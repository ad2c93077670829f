"""Holdfast's evaluator against a second implementation: OpenFeature's in-process flagd evaluator
(``openfeature-flagd-core``), on many generated contexts.

Targeting rules and the custom operations ``sem_ver``, ``starts_with`` and ``ends_with`` must pick
the same variant everywhere. ``fractional`` is the exception, and the test pins it down:
flagd-core 2.x hashes a CBOR encoding of the bucketing value (flagd's "fractional-v3"), while
Holdfast buckets like flagd 0.15-0.16 (murmur3 of the UTF-8 string), whose published vectors are
in test_flag_eval.py.
"""

from __future__ import annotations

import random
from typing import Any

import cbor2
import mmh3
import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.contrib.tools.flagd.core.targeting.custom_ops import fractional as core_fractional
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import OpenFeatureError

from holdfast.flags.custom_ops import fractional as our_fractional
from holdfast.flags.definition import parse_file
from holdfast.flags.evaluate import evaluate

VARIANTS = {"a": "A", "b": "B", "c": "C"}
FILE: dict[str, Any] = {
    "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@corp.example"]}},
    "flags": {
        name: {"state": "ENABLED", "variants": VARIANTS, "defaultVariant": "c", "targeting": rule}
        for name, rule in {
            "versions": {"if": [{"sem_ver": [{"var": "version"}, ">=", "2.1.0"]}, "a",
                                {"sem_ver": [{"var": "version"}, "~", "1.4.0"]}, "b", None]},
            "majors": {"if": [{"sem_ver": [{"var": "version"}, "^", "3.0.0"]}, "a", "b"]},
            "prefixes": {"if": [{"starts_with": [{"var": "email"}, "ops"]}, "a",
                                {"$ref": "staff"}, "b", None]},
            "tenants": {"if": [{"in": [{"var": "tenant"}, ["acme", "globex"]]}, "a",
                               {"<": [{"var": "age"}, 18]}, "b", "c"]},
            "combined": {"if": [{"and": [{"$ref": "staff"},
                                         {"!": {"sem_ver": [{"var": "version"}, "<", "2.0.0"]}},
                                         {">=": [{"var": "age"}, 21]}]}, "a",
                                {"or": [{"==": [{"var": "tenant"}, "initech"]},
                                        {"starts_with": [{"var": "email"}, "z"]}]}, "b",
                                None]},
            "catted": {"if": [{"==": [{"cat": [{"var": "tenant"}, "-", {"var": "age"}]},
                                      "acme-30"]}, "a", "b"]},
        }.items()
    },
}  # fmt: skip
VERSIONS = ["1.4.2", "1.4", "v1.4.9", "2.1.0", "2.0.9", "3.0.0-rc.1", "3.2", "10.0.0", "2",
            "1.4.0+build.5", "not-a-version", "", 3, 2.5, True, None]  # fmt: skip
EMAILS = ["ops@corp.example", "dev@corp.example", "ops@other.io", "zed@x.io", "Ops@corp.example",
          "", None, 7]  # fmt: skip
TENANTS = ["acme", "globex", "initech", "ACME", "", None, 1]
AGES = [17, 18, 21, 30, "30", 17.5, None]


def contexts(n: int) -> list[dict[str, Any]]:
    rng = random.Random(20261207)
    out = []
    for i in range(n):
        ctx: dict[str, Any] = {"targetingKey": f"user-{i}"}
        for name, values in (("version", VERSIONS), ("email", EMAILS), ("tenant", TENANTS),
                             ("age", AGES)):  # fmt: skip
            value = rng.choice(values)
            if value is not None:  # absent, not null: the rules read a missing attribute
                ctx[name] = value
        out.append(ctx)
    return out


def theirs(core: FlagdCore, key: str, ctx: dict[str, Any]) -> str | None:
    attributes = {k: v for k, v in ctx.items() if k != "targetingKey"}
    context = EvaluationContext(targeting_key=ctx["targetingKey"], attributes=attributes)
    try:
        return core.resolve_string_value(key, "code-default", context).variant
    except OpenFeatureError:
        return "ERROR"


def ours(spec: Any, ctx: dict[str, Any]) -> str | None:
    result = evaluate(spec, ctx, now=0)
    return "ERROR" if result.failed else result.variant


def test_rules_and_custom_operations_agree_with_flagd_core() -> None:
    specs, _ = parse_file(FILE)
    core = FlagdCore()
    core.set_flags(FILE)
    compared = 0
    for spec in specs:
        for ctx in contexts(400):
            assert ours(spec, ctx) == theirs(core, spec.key, ctx), (spec.key, ctx)
            compared += 1
    assert compared == 2400


@pytest.mark.parametrize("key", [f"user-{i}" for i in range(0, 2000, 97)])
def test_fractional_v3_of_flagd_core_hashes_cbor_not_the_string(key: str) -> None:
    """flagd-core 2.x buckets ``[flagKey, targetingKey]`` encoded as CBOR; Holdfast (and flagd
    0.15-0.16) bucket the string ``flagKey + targetingKey``. Both are the same arithmetic."""
    dist = [["a", 25], ["b", 25], ["c", 50]]
    data = {"targetingKey": key, "$flagd": {"flagKey": "split"}}

    def pick(hashed: bytes) -> str:
        point = (mmh3.hash(hashed, 0, signed=False) * 100) >> 32
        return "a" if point < 25 else "b" if point < 50 else "c"

    assert our_fractional(data, *dist) == pick(f"split{key}".encode())
    assert core_fractional(data, *dist) == pick(cbor2.dumps(["split", key], canonical=True))
