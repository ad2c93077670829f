"""Fuzz configsvc's request parsing: every body and query parser, the flag-file apply path, the
rollout, experiment, policy and evaluation-case pieces, and the tokens file. Only configsvc's own
errors (ConfigsvcError: a 4xx in the OpenAI shape) may come out, or the file parsers' own
(TokensFileError); each input in bounded time and memory (tests/fuzz/bounds.py).

Parsers are found, not listed: every ``parse`` classmethod in a configsvc module that takes a
body (``raw: bytes``) or a query (``query: Mapping[str, str]``), so a new payload class is
fuzzed the day it is written. Field names come from the class's or its module's ``*FIELDS``, so
generated bodies get past the unknown-field check into the validation behind it.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import configsvc
from configsvc.budgets.prices import parse_price
from configsvc.errors import ConfigsvcError
from configsvc.experiments.api import parse_variants
from configsvc.flags.api import APPLY_FIELDS, _content
from configsvc.http.payloads import parse_object
from configsvc.http.tokens import TokensFileError, parse_tokens
from configsvc.prompts.cases import parse_cases
from configsvc.rollouts.api import parse_start
from configsvc.rollouts.plan import parse_interval, parse_steps
from configsvc.rollouts.policy import parse_policy
from holdfast.flags.definition import FlagFileError, parse_file
from tests.fuzz.bounds import bounded

CORPUS = Path(__file__).parent / "corpus"
FAST = settings(max_examples=60)
OURS = (ConfigsvcError,)


def _fields_near(cls: type[Any], module: Any) -> frozenset[str]:
    names: set[str] = set(getattr(cls, "FIELDS", ()) or ())
    for attr, value in vars(module).items():
        if attr.endswith("FIELDS") and isinstance(value, frozenset):
            names |= {v for v in value if isinstance(v, str)}
    return frozenset(names)


def discover() -> tuple[dict[str, tuple[Callable[..., Any], frozenset[str]]], dict[str, Any]]:
    """``parse`` classmethods of configsvc: (bodies, queries), by qualified name."""
    bodies: dict[str, tuple[Callable[..., Any], frozenset[str]]] = {}
    queries: dict[str, Any] = {}
    for info in pkgutil.walk_packages(configsvc.__path__, "configsvc."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            parse = getattr(cls, "parse", None)
            if cls.__module__ != module.__name__ or not inspect.ismethod(parse):
                continue
            params = list(inspect.signature(parse).parameters.values())
            if len(params) != 1:
                continue
            name = f"{cls.__module__}.{cls.__qualname__}"
            if params[0].name == "raw" and params[0].annotation == "bytes":
                bodies[name] = (parse, _fields_near(cls, module))
            elif params[0].name == "query" and "Mapping" in str(params[0].annotation):
                queries[name] = (parse, _fields_near(cls, module))
    return bodies, queries


BODY_CLASSES, QUERY_CLASSES = discover()
START_FIELDS = frozenset({"release", "steps", "interval", "reason", "policy"})
PRICE_FIELDS = frozenset({"input_per_1m", "output_per_1m", "reason"})


def _price(raw: bytes) -> Any:
    return parse_price(raw, "model-x")


def _flag_apply(raw: bytes) -> Any:
    """``POST /v1/flags/apply`` up to the write: body, the file's text, the flagd parse."""
    document, _ = _content(parse_object(raw, APPLY_FIELDS))
    try:
        return parse_file(document)
    except FlagFileError as exc:  # configsvc.flag_ops turns it into InvalidFlagFile (400)
        raise ConfigsvcError(str(exc)) from exc


BODIES: dict[str, tuple[Callable[..., Any], frozenset[str]]] = {
    **BODY_CLASSES,
    "rollout_api.parse_start": (parse_start, START_FIELDS),
    "prices.parse_price": (_price, PRICE_FIELDS),
    "flags_api.apply": (_flag_apply, APPLY_FIELDS),
}


def test_every_payload_parser_is_fuzzed() -> None:
    short = {name.rsplit(".", 1)[-1] for name in [*BODIES, *QUERY_CLASSES]}
    expected_bodies = {"NewRelease", "SetStable", "Rollback", "SetAliases", "SetCanary"}
    expected_bodies |= {"Reason", "Switch", "SetShadow", "MigratePins", "RegisterContract"}
    expected_bodies |= {"SetBudget", "NewPrompt", "parse_start", "parse_price", "apply"}
    assert expected_bodies <= short, expected_bodies - short
    assert {"HistoryQuery", "ReportQuery", "PinsQuery", "DiffQuery"} <= short
    assert all(fields for _, fields in BODIES.values())


# Values that get past type checks into the validation behind them.
PLAUSIBLE = st.sampled_from(
    [
        "r1", "support", "gpt-4o", "1.0.0", "2", "active", "10m", "1,5,25,100", "5s", "",
        "http://127.0.0.1:9900/v1", "http://169.254.169.254/latest", "https://api.openai.com/v1",
        "TOKEN_VAR", "block", "degrade:r2", "daily", "UTC", "x" * 5000, "\u0000", "\ud800",
        0, -1, 1, 50, 100, 101, 1e308, 2**64, 0.5, True, False, None, [], {},
        ["a", "b"], [1, 5, 100], {"type": "object"}, {"search": "1.0.0"},
        {"flags": {"f": {"state": "ENABLED", "variants": {"on": True}, "defaultVariant": "on"}}},
    ]
)  # fmt: skip
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20) | PLAUSIBLE,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def encoded(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def body_strategy(fields: frozenset[str]) -> st.SearchStrategy[bytes]:
    keys = st.sampled_from(sorted(fields)) | st.text(max_size=6)
    objects = st.dictionaries(keys, json_values, max_size=len(fields) + 1).map(encoded)
    flag_files = st.builds(
        lambda doc, reason: encoded({"content": json.dumps(doc), "reason": reason}),
        json_values,
        st.text(max_size=10),
    )
    return objects | flag_files | json_values.map(encoded) | st.binary(max_size=512)


def run_body(parse: Callable[..., Any], raw: bytes) -> None:
    with contextlib.suppress(*OURS), bounded(raw):
        parse(raw)


@pytest.mark.parametrize("name", sorted(BODIES))
def test_body_parsers(name: str) -> None:
    parse, fields = BODIES[name]

    @FAST
    @given(body_strategy(fields))
    def run(raw: bytes) -> None:
        run_body(parse, raw)

    run()


@pytest.mark.parametrize("name", sorted(QUERY_CLASSES))
def test_query_parsers(name: str) -> None:
    parse, fields = QUERY_CLASSES[name]
    keys = st.sampled_from(sorted(fields) or ["limit"]) | st.text(max_size=6)
    values = PLAUSIBLE.map(str) | st.text(max_size=30)

    @FAST
    @given(st.dictionaries(keys, values, max_size=5))
    def run(query: dict[str, str]) -> None:
        with contextlib.suppress(*OURS), bounded(query):
            parse(query)

    run()


@FAST
@given(json_values)
def test_decoded_json_pieces(value: Any) -> None:
    """The parts of bodies parsed after the generic JSON step: rollout policy, experiment
    variants, evaluation cases (POST .../evaluate)."""
    for parse in (parse_policy, parse_variants, parse_cases):
        with contextlib.suppress(*OURS), bounded((parse.__name__, value)):
            parse(value)


@FAST
@given(st.text(max_size=40) | PLAUSIBLE.map(str))
def test_rollout_plan_strings(text: str) -> None:
    for parse in (parse_steps, parse_interval):
        with contextlib.suppress(*OURS), bounded(text):
            parse(text)


tokens_lines = st.lists(
    st.dictionaries(
        st.sampled_from(["subject", "role", "sha256"]) | st.text(max_size=4),
        PLAUSIBLE | st.sampled_from(["admin", "viewer", "a" * 64, "f" * 64]),
        max_size=4,
    ).map(json.dumps)
    | st.text(max_size=30),
    max_size=6,
)


@FAST
@given(tokens_lines)
def test_tokens_file(lines: list[str]) -> None:
    text = "\n".join(lines)
    with contextlib.suppress(TokensFileError), bounded(text):
        parse_tokens(text)


CORPUS_FILES = sorted([*(CORPUS / "configsvc").iterdir(), *(CORPUS / "request").iterdir()])


@pytest.mark.parametrize("path", CORPUS_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_configsvc_corpus(path: Path) -> None:
    raw = path.read_bytes()
    for name, (parse, _) in BODIES.items():
        with contextlib.suppress(*OURS), bounded((name, path.name)):
            parse(raw)
    with contextlib.suppress(TokensFileError), bounded(("tokens", path.name)):
        parse_tokens(raw.decode("utf-8", "replace"))
