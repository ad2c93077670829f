"""Fuzz every record decoder and the flagd file parser: only RecordError/KeyError_/FlagFileError,
each input in bounded time and memory (tests/fuzz/bounds.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import json
import pkgutil
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import holdfast.keyspace
from holdfast.flags.definition import FlagFileError, parse_file
from holdfast.keyspace.codec import RecordError
from holdfast.keyspace.keys import KeyError_
from sidecar.config.kinds import CONFIG_KINDS
from tests.fuzz.bounds import bounded

CORPUS = Path(__file__).parent / "corpus"
OURS = (RecordError, KeyError_)
FAST = settings(
    max_examples=40, deadline=500, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def record_types() -> list[type[Any]]:
    found: dict[str, type[Any]] = {}
    for info in pkgutil.iter_modules(holdfast.keyspace.__path__):
        module = importlib.import_module(f"holdfast.keyspace.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            decode = getattr(cls, "decode", None)
            if isinstance(getattr(cls, "KIND", None), str) and inspect.ismethod(decode):
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [found[k] for k in sorted(found)]


RECORDS = record_types()
PACKABLE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)


def test_every_record_type_is_fuzzed() -> None:
    names = {cls.__name__ for cls in RECORDS}
    assert {"Release", "Route", "Pin", "HealthSnapshot", "Contract", "FlagRecord"} <= names


def fields_of(cls: type[Any]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


@pytest.mark.parametrize("cls", RECORDS, ids=lambda c: c.__name__)
def test_record_decoders(cls: type[Any]) -> None:
    names = fields_of(cls) or ["name"]

    @FAST
    @given(
        st.dictionaries(st.sampled_from(names) | st.text(max_size=6), PACKABLE, max_size=8),
        st.binary(max_size=256),
    )
    def run(fields: dict[str, Any], junk: bytes) -> None:
        for data in (msgpack.packb({"_v": 1, "_k": cls.KIND, **fields}), junk):
            with contextlib.suppress(*OURS), bounded(data):
                cls.decode(data)

    run()


@FAST
@given(
    st.sampled_from(sorted(CONFIG_KINDS)),
    st.lists(st.text(max_size=10), max_size=3),
    st.binary(max_size=512),
)
def test_config_kind_decoders(kind: str, parts: list[str], data: bytes) -> None:
    with contextlib.suppress(*OURS), bounded(data):
        CONFIG_KINDS[kind](tuple(parts), data)


@pytest.mark.parametrize("path", sorted((CORPUS / "records").iterdir()), ids=lambda p: p.name)
def test_record_corpus(path: Path) -> None:
    data = path.read_bytes()
    for cls in RECORDS:
        with pytest.raises(OURS), bounded((cls.__name__, path.name)):
            cls.decode(data)
    for kind, decode in CONFIG_KINDS.items():
        with pytest.raises(OURS), bounded((kind, path.name)):
            decode((kind,), data)


def flag_document(raw: bytes) -> None:
    with bounded(raw):
        try:
            document = json.loads(raw)
        except (ValueError, RecursionError):
            return
        with contextlib.suppress(FlagFileError):
            parse_file(document)


@FAST
@given(PACKABLE.filter(lambda v: not isinstance(v, bytes)))
def test_flag_files(document: Any) -> None:
    with contextlib.suppress(FlagFileError), bounded(document):
        parse_file({"flags": {"f": document}} if isinstance(document, dict) else document)


@pytest.mark.parametrize("path", sorted((CORPUS / "flags").iterdir()), ids=lambda p: p.name)
def test_flag_corpus(path: Path) -> None:
    flag_document(path.read_bytes())
