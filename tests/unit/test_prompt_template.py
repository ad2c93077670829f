"""Prompt templates, prompt records and evaluation cases: pure logic."""

from __future__ import annotations

import pytest

from configsvc.errors import InvalidCases
from configsvc.prompts.cases import check, parse_case_bytes, parse_cases
from holdfast.keyspace import Pin, RecordError, Release
from holdfast.keyspace.prompt import CaseResult, Evaluation, PromptVersion, decode_prompt
from holdfast.prompts.template import TemplateError, parse, values_from


def test_variables_render_and_escape() -> None:
    t = parse("Hi {{ user }}, welcome to {{shop}}. Literal: \\{{user}}. {{user}}!")
    assert t.variables == ("user", "shop")
    out = t.render({"user": "Ann", "shop": "Acme"})
    assert out == "Hi Ann, welcome to Acme. Literal: {{user}}. Ann!"


@pytest.mark.parametrize("bad", ["{{", "a {{ b", "{{1x}}", "{{a-b}}", "{{}}", "x {{a b}} y"])
def test_malformed_templates_are_refused(bad: str) -> None:
    with pytest.raises(TemplateError, match="is not a variable"):
        parse(bad)


def test_unknown_and_missing_variables() -> None:
    t = parse("Hello {{user}}")
    with pytest.raises(TemplateError, match="missing value for variable\\(s\\): user"):
        t.render({})
    with pytest.raises(TemplateError, match="unknown variable\\(s\\): tone"):
        t.render({"user": "a", "tone": "x"})


def test_variable_values_from_json() -> None:
    assert values_from({"a": 1, "b": True, "c": "x"}, what="v") == {
        "a": "1",
        "b": "true",
        "c": "x",
    }
    with pytest.raises(TemplateError, match="must be a string, number or boolean"):
        values_from({"a": [1]}, what="v")
    with pytest.raises(TemplateError, match="JSON object"):
        values_from(["a"], what="v")


def _prompt(**kw: object) -> PromptVersion:
    base: dict[str, object] = {"name": "support", "version": "1", "text": "Be kind to {{user}}."}
    return PromptVersion(**(base | kw))  # type: ignore[arg-type]


def test_prompt_record_round_trip_with_evaluation() -> None:
    ev = Evaluation(
        agent="bot",
        release="r1",
        model="m",
        at=1.0,
        by="ops",
        passed=1,
        total=2,
        cases=(CaseResult(case="a", passed=True), CaseResult(case="b", passed=False, error="x")),
    )
    p = _prompt(status="active", previous="", evaluation=ev, author="ann")
    back = decode_prompt(("support", "1"), p.encode())
    assert back == p and back.evaluation is not None and back.evaluation.pass_rate == 0.5
    with pytest.raises(RecordError, match="its key"):
        decode_prompt(("support", "2"), p.encode())


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"version": "0"}, "positive integer"),
        ({"version": "v1"}, "positive integer"),
        ({"text": "  "}, "empty"),
        ({"text": "{{oops"}, "is not a variable"),
        ({"status": "live"}, "invalid prompt status"),
        ({"text": "x" * 200_000}, "over"),
    ],
)
def test_bad_prompt_records(kw: dict[str, object], match: str) -> None:
    with pytest.raises(RecordError, match=match):
        _prompt(**kw)


def test_release_and_pin_carry_prompt_versions() -> None:
    r = Release(
        agent="bot", name="r1", model="m", base_url="http://x/v1", prompts={"b": "active", "a": "3"}
    )
    assert Release.decode(r.encode()).prompts == {"a": "3", "b": "active"}
    with pytest.raises(RecordError, match="invalid prompt version"):
        Release(agent="bot", name="r1", model="m", base_url="http://x/v1", prompts={"a": "x"})
    pin = Pin(
        agent="bot",
        session="s1",
        release="r1",
        pinned_at=1,
        revision=1,
        prompts={"b": "2"},
        experiment="exp/a",
    )
    assert Pin.decode(pin.encode()) == pin
    with pytest.raises(RecordError, match="never 'active'"):
        Pin(
            agent="bot", session="s", release="r1", pinned_at=1, revision=1, prompts={"b": "active"}
        )


CASES = {
    "cases": [
        {
            "id": "hello",
            "input": "hi",
            "vars": {"user": "Ann"},
            "expect": {
                "contains": ["hello"],
                "not_contains": "sorry",
                "regex": "^hel+o",
                "similar_to": "hello there Ann",
                "min_similarity": 0.5,
            },
        },
        {
            "id": "json",
            "input": "give json",
            "expect": {
                "json_schema": {"type": "object", "required": ["ok"]},
            },
        },
    ]
}


def test_case_checks() -> None:
    hello, js = parse_cases(CASES)
    result = check(hello, "hello there Ann")
    assert result.passed and [c["kind"] for c in result.checks] == [
        "contains",
        "not_contains",
        "regex",
        "similarity",
    ]
    failed = check(hello, "sorry, no")
    assert not failed.passed
    assert {c["kind"] for c in failed.checks if not c["passed"]} == {
        "contains",
        "not_contains",
        "regex",
        "similarity",
    }
    assert check(js, '{"ok": 1}').passed
    bad = check(js, '{"nope": 1}')
    assert not bad.passed and "ok" in bad.checks[0]["detail"]
    assert check(js, "not json").checks[0]["detail"] == "the answer is not JSON"


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "non-empty list"),
        (b'{"cases": [{"input": "x"}]}', "'expect' must be an object"),
        (b'{"cases": [{"input": "x", "expect": {"smells": 1}}]}', "unknown expectation"),
        (b'{"cases": [{"input": "x", "expect": {"regex": "("}}]}', "'regex' refused: missing"),
        # RE2 only: no backreferences, no lookaround (refused at load, never run)
        (b'{"cases": [{"input": "x", "expect": {"regex": "(a)\\\\1"}}]}', "under RE2"),
        (b'{"cases": [{"input": "x", "expect": {"regex": "(?=a)b"}}]}', "under RE2"),
        (
            b'{"cases": [{"input": "x", "expect": {"json_schema": {"type": "string",'
            b' "pattern": "(?<!a)b"}}}]}',
            "'json_schema' refused.*RE2",
        ),
        (
            b'{"cases": [{"input": "x", "expect": {"json_schema":'
            b' {"patternProperties": {"^a": {}}}}}]}',
            "'patternProperties' is not supported",
        ),
        (b'{"cases": [{"input": "x", "expect": {"json_schema": {"type": 3}}}]}', "is invalid"),
        (
            b'{"cases": [{"id": "a", "input": "x", "expect": {"contains": "a"}},'
            b' {"id": "a", "input": "y", "expect": {"contains": "b"}}]}',
            "repeated: a",
        ),
        (b'{"cases": [{"input": "x", "expect": {"min_similarity": 0.5}}]}', "needs 'similar_to'"),
        (b'{"cases": [{"input": 3, "expect": {"contains": "a"}}]}', "'input' must be"),
    ],
)
def test_case_files_that_do_not_parse(raw: bytes, match: str) -> None:
    with pytest.raises(InvalidCases, match=match):
        parse_case_bytes(raw)
