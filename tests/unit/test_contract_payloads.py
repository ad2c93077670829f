"""Registering a contract: the request body's strict parsing and the CLI's schema files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from configsvc.cli.contracts import MAX_SCHEMA_FILE_BYTES, _schema_file
from configsvc.contracts.payloads import RegisterContract
from configsvc.errors import InvalidRequest
from holdfast.contracts.schema import MAX_SCHEMA_BYTES
from holdfast.keyspace.contract import DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S

ARGS = {"type": "object", "properties": {"q": {"type": "string"}}}
RESULT = {"type": "object"}


def body(**over: Any) -> bytes:
    fields: dict[str, Any] = {"args_schema": ARGS, "result_schema": RESULT, **over}
    return json.dumps({k: v for k, v in fields.items() if v is not ...}).encode()


def test_defaults_and_every_field() -> None:
    plain = RegisterContract.parse(body())
    assert (plain.timeout_s, plain.idempotent, plain.policy, plain.backend) == (
        DEFAULT_TIMEOUT_S, False, "enforce", "")  # fmt: skip
    full = RegisterContract.parse(body(backend="http://tools.internal/search", timeout_s=2,
                                       idempotent=True, policy="report", description="d",
                                       reason="r"))  # fmt: skip
    assert (full.backend, full.timeout_s, full.idempotent, full.policy) == (
        "http://tools.internal/search", 2.0, True, "report")  # fmt: skip
    assert RegisterContract.parse(body(timeout_s=MAX_TIMEOUT_S)).timeout_s == MAX_TIMEOUT_S


@pytest.mark.parametrize(
    ("raw", "param", "words"),
    [
        (body(timeout_s=0), "timeout_s", "in (0, 300]"),
        (body(timeout_s=-1), "timeout_s", "in (0, 300]"),
        (body(timeout_s=MAX_TIMEOUT_S + 0.001), "timeout_s", "in (0, 300]"),
        (body(timeout_s="5"), "timeout_s", "a number of seconds"),
        (body(timeout_s=True), "timeout_s", "a number of seconds"),
        (
            # a number no double holds is refused by the parser, before any field is read
            b'{"args_schema": {"type": "object"}, "result_schema": {}, "timeout_s": 1e999}',
            None,
            "number is infinity",
        ),
        (body(idempotent="yes"), "idempotent", "true or false"),
        (body(idempotent=1), "idempotent", "true or false"),
        (body(policy="strict"), "policy", "enforce, rewrite, report"),
        (body(retries=3), "retries", "unknown field(s): retries"),
        (body(args_schema=...), "args_schema", "'args_schema' is required"),
        (body(result_schema=...), "result_schema", "'result_schema' is required"),
        (body(args_schema={"type": "string"}), "args_schema", '"type": "object"'),
        (body(result_schema=[]), "result_schema", "must be a JSON object"),
        (body(result_schema={"type": "nope"}), "result_schema", "not valid JSON Schema"),
        (body(result_schema={"$ref": "#/$defs/x"}), "result_schema", "points nowhere"),
        (body(backend="ftp://x/y"), "backend", "need http(s)://host"),
        (body(backend="http://user:pw@x/y"), "backend", "no query, fragment or credentials"),
        (body(backend=5), "backend", "must be a string"),
        (b"[]", None, "must be a JSON object"),
        (b"{not json", None, "not valid JSON"),
    ],
)
def test_bad_registrations_are_refused(raw: bytes, param: str | None, words: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        RegisterContract.parse(raw)
    assert words in info.value.message and info.value.param == param


def test_schema_size_limit_names_the_limit() -> None:
    huge = {"type": "object", "description": "x" * MAX_SCHEMA_BYTES}
    with pytest.raises(InvalidRequest, match=f"the limit is {MAX_SCHEMA_BYTES}"):
        RegisterContract.parse(body(result_schema=huge))


def test_cli_schema_files(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps(ARGS))
    assert _schema_file(str(good)) == ARGS
    cases = {
        "missing.json": (None, "cannot read"),
        "big.json": (b" " * (MAX_SCHEMA_FILE_BYTES + 1), f"larger than {MAX_SCHEMA_FILE_BYTES}"),
        "bad.json": (b"{nope", "is not JSON"),
        "latin1.json": (b'{"d": "\xe9"}', "is not JSON"),
        "list.json": (b"[1]", "must hold a JSON object"),
    }
    for name, (content, words) in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(argparse.ArgumentTypeError, match=words):
            _schema_file(str(path))
    directory = tmp_path / "dir.json"
    directory.mkdir()
    with pytest.raises(argparse.ArgumentTypeError, match="cannot read"):
        _schema_file(str(directory))
