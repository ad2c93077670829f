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
from holdfast.keyspace.contract import Contract, decode_contract

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
    assert first_errors(validator, {"a": "x"}) == ["a: 'x' is not of type 'integer'"]


def test_semver() -> None:
    assert semver.bump("1.4.2", "major") == "2.0.0"
    assert semver.bump("1.4.2", "minor") == "1.5.0"
    assert semver.bump("1.4.2", "patch") == "1.4.3"
    assert semver.latest(["1.10.0", "1.9.9", "junk", "2.0.0"]) == "2.0.0"
    assert semver.ordered(["1.10.0", "1.9.0"]) == ["1.9.0", "1.10.0"]
    for bad in ("1.0", "01.0.0", "1.0.0-rc1", "v1.0.0"):
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
