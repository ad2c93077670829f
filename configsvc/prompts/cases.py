"""Evaluation cases of a prompt version and the checks of a model's answer against them (pure).

A case file is JSON: ``{"cases": [CASE, ...]}`` (or the list alone), each case

    {"id": "refund-policy",                  # unique, 1-64 characters
     "input": "Can I return shoes?",          # the user message sent after the prompt
     "vars": {"shop": "Acme"},                # the prompt's variables for this case
     "expect": {                              # every expectation given must hold
        "contains": ["30 days"],              # substrings (case-sensitive), all of them
        "not_contains": ["sorry"],            # substrings that must not appear
        "regex": "\\b30 days\\b",             # RE2 regex (no backreferences/lookaround)
        "json_schema": {...},                 # the answer parses as JSON and validates (2020-12)
        "similar_to": "reference answer",     # word-sequence similarity (the shadow comparison's)
        "min_similarity": 0.8}}               # ... at least this (default 0.8)
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from jsonschema.exceptions import SchemaError

from configsvc.errors import InvalidCases
from configsvc.prompts.regex import (
    RegexRefused,
    SchemaValidator,
    Searcher,
    check_schema_patterns,
    compile_re2,
)
from holdfast.compare import similarity
from holdfast.json_limits import JsonRefused, loads_bounded
from holdfast.keyspace.prompt import MAX_CASES, CaseResult
from holdfast.prompts.template import TemplateError, values_from

MAX_CASE_FILE_BYTES: Final = 1 << 20
MAX_INPUT_CHARS: Final = 32 * 1024
# A 1024-token answer is a few KiB; only a misbehaving provider sends more, and the checks'
# cost grows with the answer, so a longer one fails its case unchecked.
MAX_CHECKED_CHARS: Final = 128 * 1024
DEFAULT_MIN_SIMILARITY: Final = 0.8
CASE_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
CASE_FIELDS: Final = frozenset({"id", "input", "vars", "expect"})
EXPECT_FIELDS: Final = frozenset(
    {"contains", "not_contains", "regex", "json_schema", "similar_to", "min_similarity"}
)


@dataclass(frozen=True, slots=True)
class Case:
    id: str
    input: str
    vars: dict[str, str] = field(default_factory=dict)
    contains: tuple[str, ...] = ()
    not_contains: tuple[str, ...] = ()
    regex: Searcher | None = None
    json_schema: dict[str, Any] | None = None
    similar_to: str | None = None
    min_similarity: float = DEFAULT_MIN_SIMILARITY


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise InvalidCases(f"{where} must be a string or a list of strings")


def _case(raw: Any, index: int) -> Case:
    where = f"case #{index + 1}"
    if not isinstance(raw, dict):
        raise InvalidCases(f"{where} must be an object")
    unknown = sorted(set(raw) - CASE_FIELDS)
    if unknown:
        raise InvalidCases(f"{where}: unknown field(s) {', '.join(unknown)}")
    case_id = raw.get("id", f"case-{index + 1}")
    if not isinstance(case_id, str) or not CASE_ID_RE.fullmatch(case_id):
        raise InvalidCases(f"{where}: 'id' must be 1-64 characters of letters, digits, ._:-")
    where = f"case {case_id!r}"
    text = raw.get("input")
    if not isinstance(text, str) or not text or len(text) > MAX_INPUT_CHARS:
        raise InvalidCases(f"{where}: 'input' must be a non-empty string (<= {MAX_INPUT_CHARS})")
    try:
        variables = values_from(raw.get("vars", {}), what=f"{where}: 'vars'")
    except TemplateError as exc:
        raise InvalidCases(str(exc)) from exc
    expect = raw.get("expect")
    if not isinstance(expect, dict) or not expect:
        raise InvalidCases(f"{where}: 'expect' must be an object with at least one expectation")
    unknown = sorted(set(expect) - EXPECT_FIELDS)
    if unknown:
        raise InvalidCases(
            f"{where}: unknown expectation(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(EXPECT_FIELDS))}"
        )
    regex = None
    if "regex" in expect:
        if not isinstance(expect["regex"], str):
            raise InvalidCases(f"{where}: 'regex' must be a string")
        try:
            regex = compile_re2(expect["regex"])
        except RegexRefused as exc:
            raise InvalidCases(f"{where}: 'regex' refused: {exc}") from exc
    schema = expect.get("json_schema")
    if schema is not None:
        if not isinstance(schema, dict):
            raise InvalidCases(f"{where}: 'json_schema' must be an object")
        try:
            SchemaValidator.check_schema(schema)
            check_schema_patterns(schema)
        except SchemaError as exc:
            raise InvalidCases(f"{where}: 'json_schema' is invalid: {exc.message}") from exc
        except RegexRefused as exc:
            raise InvalidCases(f"{where}: 'json_schema' refused: {exc}") from exc
    reference = expect.get("similar_to")
    if reference is not None and not isinstance(reference, str):
        raise InvalidCases(f"{where}: 'similar_to' must be a string")
    threshold = expect.get("min_similarity", DEFAULT_MIN_SIMILARITY)
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not (0.0 <= threshold <= 1.0)
    ):
        raise InvalidCases(f"{where}: 'min_similarity' must be a number from 0 to 1")
    if "min_similarity" in expect and reference is None:
        raise InvalidCases(f"{where}: 'min_similarity' needs 'similar_to'")
    return Case(
        id=case_id,
        input=text,
        vars=variables,
        contains=_strings(expect["contains"], f"{where}: 'contains'")
        if "contains" in expect
        else (),
        not_contains=_strings(expect["not_contains"], f"{where}: 'not_contains'")
        if "not_contains" in expect
        else (),
        regex=regex,
        json_schema=schema,
        similar_to=reference,
        min_similarity=float(threshold),
    )


def parse_cases(raw: Any) -> tuple[Case, ...]:
    """Cases from the decoded JSON of a case file; InvalidCases says what is wrong and where."""
    if isinstance(raw, dict):
        unknown = sorted(set(raw) - {"cases"})
        if unknown:
            raise InvalidCases(f"case file: unknown field(s) {', '.join(unknown)}")
        raw = raw.get("cases")
    if not isinstance(raw, list) or not raw:
        raise InvalidCases('case file must hold a non-empty list of cases ({"cases": [...]})')
    if len(raw) > MAX_CASES:
        raise InvalidCases(f"case file has {len(raw)} cases; the limit is {MAX_CASES}")
    cases = tuple(_case(item, i) for i, item in enumerate(raw))
    ids = [c.id for c in cases]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise InvalidCases(f"case ids must be unique; repeated: {', '.join(dupes)}")
    return cases


def parse_case_bytes(data: bytes) -> tuple[Case, ...]:
    if len(data) > MAX_CASE_FILE_BYTES:
        raise InvalidCases(f"case file is over {MAX_CASE_FILE_BYTES} bytes")
    try:
        return parse_cases(loads_bounded(data))
    except JsonRefused as exc:
        raise InvalidCases(f"case file is not acceptable JSON: {exc}") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, InvalidCases):
            raise
        raise InvalidCases(f"case file is not valid JSON: {exc}") from exc


def _check(kind: str, passed: bool, detail: str = "") -> dict[str, Any]:
    return {"kind": kind, "passed": passed, "detail": detail}


def check(case: Case, answer: str) -> CaseResult:
    """Every expectation of ``case`` against the model's ``answer`` (CPU-bound: callers on an
    event loop run it in a thread)."""
    if len(answer) > MAX_CHECKED_CHARS:
        return CaseResult(
            case=case.id,
            passed=False,
            error=f"the answer has {len(answer)} characters, over {MAX_CHECKED_CHARS}; not checked",
            answer=answer,
        )
    checks: list[dict[str, Any]] = []
    for needle in case.contains:
        checks.append(_check("contains", needle in answer, "" if needle in answer else
                             f"missing {needle!r:.80}"))  # fmt: skip
    for needle in case.not_contains:
        checks.append(_check("not_contains", needle not in answer, "" if needle not in answer
                             else f"contains {needle!r:.80}"))  # fmt: skip
    if case.regex is not None:
        found = case.regex.search(answer) is not None
        checks.append(
            _check("regex", found, "" if found else f"no match of {case.regex.pattern!r:.80}")
        )
    if case.json_schema is not None:
        checks.append(_schema_check(case.json_schema, answer))
    if case.similar_to is not None:
        score = similarity(answer, case.similar_to)
        ok = score >= case.min_similarity
        checks.append(_check("similarity", ok, f"{score:.3f} vs minimum {case.min_similarity:g}"))
    return CaseResult(
        case=case.id, passed=all(c["passed"] for c in checks), checks=tuple(checks), answer=answer
    )


def _schema_check(schema: Mapping[str, Any], answer: str) -> dict[str, Any]:
    try:
        value = json.loads(answer)
    except ValueError:
        return _check("json_schema", False, "the answer is not JSON")
    error = next(iter(SchemaValidator(schema).iter_errors(value)), None)
    if error is None:
        return _check("json_schema", True)
    where = "/".join(str(p) for p in error.path) or "(root)"
    return _check("json_schema", False, f"at {where}: {error.message[:200]}")


def failed(case: Case, error: str) -> CaseResult:
    """A case the model could not answer: it counts as not passed."""
    return CaseResult(case=case.id, passed=False, error=error[:400])
