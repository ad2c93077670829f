"""flagd files: whole-file validation, $ref resolution, the record round trip, bad records."""

from __future__ import annotations

from typing import Any

import pytest

from holdfast.flags.definition import FlagFileError, parse_file
from holdfast.keyspace import RecordError, encode_record
from holdfast.keyspace.flag import FlagRecord, decode_flag


def doc(**flags: Any) -> dict[str, Any]:
    return {"flags": flags}


GOOD = {"state": "ENABLED", "variants": {"a": "r1", "b": "r2"}, "defaultVariant": "a"}


def test_refs_are_resolved_and_records_round_trip() -> None:
    document = {
        "$schema": "https://flagd.dev/schema/v0/flags.json",
        "metadata": {"team": "core"},
        "$evaluators": {
            "acme": {"==": [{"var": "tenant"}, "acme"]},
            "acme_or_beta": {"or": [{"$ref": "acme"}, {"var": "beta"}]},
        },
        "flags": {
            "newModel": {**GOOD, "targeting": {"if": [{"$ref": "acme_or_beta"}, "b", None]}},
        },
    }
    (s,), meta = parse_file(document)
    assert s.targeting == {
        "if": [{"or": [{"==": [{"var": "tenant"}, "acme"]}, {"var": "beta"}]}, "b", None]
    }
    assert s.metadata == {"team": "core"} and meta == {"team": "core"}
    record = FlagRecord(spec=s, source="f.json", applied_by="ops")
    assert decode_flag(("newModel",), record.encode()) == record


@pytest.mark.parametrize(
    ("document", "needle"),
    [
        ({}, "'flags' is a required property"),
        (doc(f={**GOOD, "state": "ON"}), "flags.f.state"),
        (doc(f={**GOOD, "variants": {}}), "flags.f.variants"),
        (doc(f={**GOOD, "variants": {"a": 1, "b": "x"}}), "one type"),
        (doc(f={**GOOD, "defaultVariant": "zz"}), "not one of its variants"),
        (doc(f={**GOOD, "targeting": {"$ref": "nope"}}), "unknown $ref"),
        (doc(f={**GOOD, "targeting": {"bogus_op": [1]}}), "unknown operation"),
        (doc(f={**GOOD, "targeting": {"log": [1]}}), "unknown operation"),
        (doc(**{"bad/key": GOOD}), "names an etcd key"),
        ({"flags": {}, "surprise": 1}, "defines no flags"),
    ],
)
def test_invalid_files_are_refused_whole(document: Any, needle: str) -> None:
    with pytest.raises(FlagFileError) as info:
        parse_file(document)
    assert needle in str(info.value)


def test_every_problem_is_reported() -> None:
    document = doc(
        a={**GOOD, "defaultVariant": "x"}, b={**GOOD, "targeting": {"$ref": "y"}}, c=GOOD
    )
    with pytest.raises(FlagFileError) as info:
        parse_file(document)
    assert len(info.value.problems) == 2


def test_ref_cycle_is_refused() -> None:
    document = {
        "$evaluators": {"x": {"$ref": "y"}, "y": {"$ref": "x"}},
        "flags": {"f": {**GOOD, "targeting": {"$ref": "x"}}},
    }
    with pytest.raises(FlagFileError, match="cycle"):
        parse_file(document)


def test_poison_records_are_refused() -> None:
    (s,), _ = parse_file(doc(f=GOOD))
    good = FlagRecord(spec=s).encode()
    with pytest.raises(RecordError, match="names key"):
        decode_flag(("other",), good)
    fields = FlagRecord(spec=s).public()
    for bad in (
        {**fields, "variants": {"a": 1, "b": "x"}},
        {**fields, "default_variant": "missing"},
        {**fields, "targeting": {"$ref": "x"}},
        {**fields, "state": "MAYBE"},
    ):
        with pytest.raises(RecordError):
            decode_flag(("f",), encode_record("flag", bad))
    with pytest.raises(RecordError):
        decode_flag(("f",), b"\xc1not msgpack")
