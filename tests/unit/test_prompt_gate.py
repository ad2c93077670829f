"""The activation gate, evaluation bounds and the answer checks' safety: pure logic."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from configsvc.prompts.cases import MAX_CHECKED_CHARS, check, parse_cases
from configsvc.prompts.ops import PromptOps
from configsvc.prompts.settings import (
    CLIENT_MARGIN_S,
    WAVE_SLACK_S,
    EvalSettings,
    PromptSettingsError,
    client_wait,
)
from holdfast.keyspace import Keyspace
from holdfast.keyspace.prompt import Evaluation
from holdfast_devtools.fakellm.generate import JSON_MARKER, compose_reply
from holdfast_devtools.fakellm.protocol import parse_chat


def _ops(gate: float = 0.8, min_cases: int = 5) -> PromptOps:
    service = SimpleNamespace(keyspace=Keyspace("dev"))
    return PromptOps(service, gate=gate, min_cases=min_cases)  # type: ignore[arg-type]


def _ev(passed: int, total: int) -> Evaluation:
    return Evaluation(
        agent="bot", release="r1", model="m", at=1.0, by="me", passed=passed, total=total
    )


def test_gate_needs_enough_cases_and_the_pass_rate() -> None:
    ops = _ops()
    assert ops.passes(_ev(4, 5)) and ops.passes(_ev(10, 10))
    assert not ops.passes(_ev(3, 5)) and not ops.passes(None)
    assert not ops.passes(_ev(1, 1))  # one passing case says next to nothing
    problem = ops._problem(_ev(4, 4), "p@2")
    assert problem is not None and "evaluated on 4 case(s)" in problem and "bot/r1" in problem
    assert "at least 5" in problem
    low = ops._problem(_ev(3, 5), "p@2")
    assert low is not None and "below the gate of 80%" in low and "release bot/r1" in low
    # a lower gate and minimum, as HOLDFAST_PROMPT_GATE / HOLDFAST_PROMPT_MIN_CASES set them
    assert _ops(gate=0.5, min_cases=1).passes(_ev(1, 2))


def test_eval_settings_from_environ_and_bounds() -> None:
    s = EvalSettings.from_environ(
        {
            "HOLDFAST_PROMPT_MIN_CASES": "3",
            "HOLDFAST_EVAL_CASE_TIMEOUT": "2.5",
            "HOLDFAST_EVAL_CONCURRENCY": "2",
            "HOLDFAST_EVAL_TIMEOUT": "100",
        }
    )
    assert (s.min_cases, s.case_timeout, s.concurrency, s.timeout) == (3, 2.5, 2, 100.0)
    assert s.bound(5) == 3 * 2.5 + WAVE_SLACK_S  # 3 waves of at most 2.5 s
    assert s.bound(500) == 100.0  # the overall cap
    assert EvalSettings.from_environ({}) == EvalSettings()
    for name, value in (
        ("HOLDFAST_EVAL_TIMEOUT", "0"),
        ("HOLDFAST_EVAL_CONCURRENCY", "1.5"),
        ("HOLDFAST_PROMPT_MIN_CASES", "0"),
        ("HOLDFAST_EVAL_CASE_TIMEOUT", "soon"),
    ):
        with pytest.raises(PromptSettingsError, match=name):
            EvalSettings.from_environ({name: value})


def test_cli_waits_as_long_as_the_server_may_take() -> None:
    limits = EvalSettings(case_timeout=60.0, concurrency=4, timeout=600.0).public()
    # 200 cases: 50 waves of 60 s, capped at 600 s; plus the margin for the etcd write
    assert client_wait(limits, 200, 30.0) == 600.0 + CLIENT_MARGIN_S
    assert client_wait(limits, 3, 30.0) == 60.0 + WAVE_SLACK_S + CLIENT_MARGIN_S
    assert client_wait(limits, 3, 1000.0) == 1000.0  # never less than --timeout
    assert client_wait(None, 3, 1.0) == client_wait(EvalSettings().public(), 3, 1.0)


def test_catastrophic_patterns_run_in_linear_time() -> None:
    (case,) = parse_cases(
        [
            {
                "id": "redos",
                "input": "x",
                "expect": {
                    "regex": "^(a+)+$",
                    "json_schema": {
                        "type": "object",
                        "properties": {"v": {"type": "string", "pattern": "^(a|aa)+$"}},
                    },
                },
            }
        ]
    )
    evil = "a" * 30_000 + "!"
    started = time.monotonic()
    result = check(case, json.dumps({"v": evil}))
    assert time.monotonic() - started < 2.0  # Python's re would not finish this in a lifetime
    assert not result.passed
    kinds = {c["kind"]: c["passed"] for c in result.checks}
    assert kinds == {"regex": False, "json_schema": False}
    good = check(case, json.dumps({"v": "aaa"}))
    assert {c["kind"]: c["passed"] for c in good.checks}["json_schema"]


def test_oversized_answers_fail_unchecked() -> None:
    (case,) = parse_cases([{"id": "big", "input": "x", "expect": {"contains": "a"}}])
    result = check(case, "a" * (MAX_CHECKED_CHARS + 1))
    assert not result.passed and "not checked" in result.error and not result.checks


def test_fakellm_answers_json_only_when_the_system_prompt_asks() -> None:
    def reply(system: str) -> tuple[str, int]:
        request = parse_chat(
            {
                "model": "m1",
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": "refund?"},
                ],
            }
        )
        answer = compose_reply(request, length=6, tool_calls_on=False)
        return str(answer.message["content"]), answer.completion_tokens

    plain, plain_tokens = reply("You help customers.")
    asked, asked_tokens = reply(f"You help customers. Reply in JSON. {JSON_MARKER}")
    assert plain.startswith("[m1]") and asked_tokens == plain_tokens == 6
    assert json.loads(asked) == {"reply": plain}
    with pytest.raises(ValueError):
        json.loads(plain)
    # the marker in a user message is not an instruction
    request = parse_chat({"model": "m1", "messages": [{"role": "user", "content": JSON_MARKER}]})
    assert not request.reply_json
