"""Schema admission (bad input of every kind), semver, the breaker and the contract record."""

from __future__ import annotations

from typing import Any

import pytest

from holdfast.contracts import semver
from holdfast.contracts.breaker import CircuitBreaker
from holdfast.contracts.schema import (
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_DEPTH,
    SchemaProblem,
    check_schema,
    compile_validator,
    first_errors,
)
from holdfast.keyspace import RecordError
from holdfast.keyspace.contract import Contract, contract_content, decode_contract

ARGS = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
RESULT = {"type": "object", "properties": {"hits": {"type": "array"}}, "required": ["hits"]}


def deep(levels: int) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        node = {"type": "object", "properties": {"x": node}}
    return node


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ([1, 2], "must be a JSON object, not list"),
        (True, "must be a JSON object, not bool"),
        ({"type": "strng"}, "not valid JSON Schema 2020-12"),
        ({"type": "object", "minProperties": -1}, "not valid JSON Schema 2020-12"),
        ({"$ref": "https://example.com/schema.json"}, "remote $ref"),
        ({"$ref": "#/$defs/missing"}, "points nowhere"),
        ({"properties": {"a": {"$ref": "other.json#/x"}}}, "remote $ref"),
        ({"type": "object", "description": "x" * MAX_SCHEMA_BYTES}, "the limit is"),
        (deep(MAX_SCHEMA_DEPTH), "nests deeper"),
        ({"$schema": "http://json-schema.org/draft-04/schema#"}, "use 2020-12"),
    ],
)
def test_bad_schemas_are_refused_with_a_reason(schema: Any, message: str) -> None:
    with pytest.raises(SchemaProblem, match=message.replace("$", r"\$")):
        check_schema(schema, what="args schema")


def test_arguments_must_be_an_object_schema_and_local_refs_work() -> None:
    with pytest.raises(SchemaProblem, match='"type": "object"'):
        check_schema({"type": "string"}, what="args schema", object_args=True)
    schema = {"type": "object", "properties": {"a": {"$ref": "#/$defs/a"}},
              "$defs": {"a": {"type": "integer"}}}  # fmt: skip
    validator = compile_validator(check_schema(schema, what="args", object_args=True))
    assert first_errors(validator, {"a": 3}) == []
    assert first_errors(validator, {"a": "x"}) == ['a: "x" is not of type "integer"']


def test_semver() -> None:
    assert semver.bump("1.4.2", "major") == "2.0.0"
    assert semver.bump("1.4.2", "minor") == "1.5.0"
    assert semver.bump("1.4.2", "patch") == "1.4.3"
    assert semver.latest(["1.10.0", "1.9.9", "junk", "2.0.0"]) == "2.0.0"
    assert semver.ordered(["1.10.0", "1.9.0"]) == ["1.9.0", "1.10.0"]
    assert semver.bump("999.0.9", "major") == "1000.0.0"
    for bad in ("1.0", "01.0.0", "1.0.0-rc1", "1.0.0+build.1", "v1.0.0", " 1.0.0", "1.0.0\n",
                "1000000.0.0", "1.2.3.4", ""):  # fmt: skip
        with pytest.raises(semver.VersionError):
            semver.parse(bad)


def state(b: CircuitBreaker) -> str:
    return b.state


def test_breaker_opens_probes_and_closes() -> None:
    b = CircuitBreaker(failure_threshold=2, reset_after=10.0)
    assert b.allow(0.0)
    b.failure(0.0)
    assert state(b) == "closed"
    b.failure(1.0)
    assert state(b) == "open" and not b.allow(5.0) and b.retry_in(5.0) == 6.0
    assert b.allow(11.0) and state(b) == "half_open"
    assert not b.allow(11.1)  # one probe at a time
    b.failure(12.0)
    assert state(b) == "open" and b.times_opened == 2
    assert b.allow(22.5)
    b.success()
    assert state(b) == "closed" and b.allow(22.6)


def test_contract_record_roundtrip_and_hash() -> None:
    c = Contract(tool="search", version="1.0.0", args_schema=ARGS, result_schema=RESULT,
                 backend="http://127.0.0.1:9/search", idempotent=True)  # fmt: skip
    back = decode_contract(("search", "1.0.0"), c.encode())
    assert back == c and back.content_hash.startswith("sha256:")
    with pytest.raises(RecordError, match="its key"):
        decode_contract(("search", "2.0.0"), c.encode())
    with pytest.raises(RecordError, match="base URL"):
        Contract(tool="search", version="1.0.0", args_schema=ARGS, result_schema=RESULT,
                 backend="file:///etc/passwd")  # fmt: skip
    with pytest.raises(RecordError, match="hash does not match"):
        Contract(tool="search", version="1.0.0", args_schema=ARGS, result_schema=RESULT,
                 content_hash="sha256:00")  # fmt: skip


def test_contract_integer_timeout_is_normalised_before_the_hash() -> None:
    # A record built with timeout_s=2 once hashed "2" and read back as 2.0 ("2.0"): the sidecar
    # then refused it as tampered. Both spellings are one contract with one hash.
    as_int = Contract(tool="search", version="1.0.0", args_schema=ARGS, result_schema=RESULT,
                      timeout_s=2, created_at=5)  # fmt: skip
    as_float = Contract(tool="search", version="1.0.0", args_schema=ARGS, result_schema=RESULT,
                        timeout_s=2.0, created_at=5.0)  # fmt: skip
    assert type(as_int.timeout_s) is float and as_int.content_hash == as_float.content_hash
    back = decode_contract(("search", "1.0.0"), as_int.encode())
    assert back == as_int == as_float
    assert contract_content(args_schema=ARGS, result_schema=RESULT, backend="", timeout_s=2,
                            idempotent=False, policy="enforce")["timeout_s"] == 2.0  # fmt: skip
    bads: tuple[Any, ...] = (True, 0, -1, float("nan"), 301, "2")
    for bad in bads:
        with pytest.raises(RecordError, match="tool timeout"):
            Contract(tool="search", version="1.0.0", args_schema=ARGS, result_schema=RESULT,
                     timeout_s=bad)  # fmt: skip


def test_compiled_schema_fast_path_errors_and_odd_instances() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 5},
              "s": {"type": "string", "pattern": "^[a-z]+$"}}, "required": ["n"],
              "additionalProperties": False}  # fmt: skip
    v = compile_validator(check_schema(schema, what="args", object_args=True))
    assert v.is_valid({"n": 1, "s": "abc"}) and v.errors({"n": 1}) == []
    errors = v.errors({"n": 10**30, "s": "ABC", "x": 1, "y": 2})
    assert len(errors) == 3  # capped at MAX_ERRORS_REPORTED
    assert any(e.startswith("n: ") and "maximum of 5" in e for e in errors)
    assert v.errors({"n": float("nan")}) != []
    deep_list: Any = []
    for _ in range(5000):  # deeper than any parser would hand over: refused, never a crash
        deep_list = [deep_list]
    # too deep to convert: a violation that says so, never an exception on the request path
    assert compile_validator({"type": "object"}).errors(deep_list) == [
        "(root): cannot be checked: Recursion limit reached"
    ]
    assert not compile_validator({"type": "object"}).is_valid(deep_list)


def test_admission_refuses_what_the_sidecar_cannot_compile_and_nothing_is_fetched() -> None:
    # Python's re takes these; ECMA-262 (what the sidecar runs) does not: refused at the door.
    for pattern in ("(?#comment)a", "a{,3}", "a\\Z"):
        with pytest.raises(SchemaProblem, match="cannot be compiled"):
            check_schema({"type": "string", "pattern": pattern}, what="args schema")
    # A record that skipped admission still cannot make the validator reach the network.
    with pytest.raises(ValueError, match="Retrieval is disabled"):
        compile_validator({"$ref": "http://127.0.0.1:9/remote.json"})
