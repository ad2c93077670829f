"""Estimators and usage readers of the budget filter."""

from __future__ import annotations

import json

import pytest

from holdfast_devtools.fakellm.generate import prompt_tokens
from sidecar.budgets.usage import (
    Usage,
    UsageError,
    body_usage,
    cap_field,
    choice_cap,
    completion_cap,
    estimate_prompt,
    read_event,
    reply_estimate,
    write_cap,
)
from sidecar.upstream.provider_json import MAX_USAGE_TOKENS, USAGE_REJECTED, usage_counts

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "a b c d e f g, h; i? j! ünïcödé 数字"},
]


def test_bytes_estimator_is_an_upper_bound() -> None:
    body = {"messages": MESSAGES}
    est = estimate_prompt(body, "chat", "bytes")
    assert est >= prompt_tokens(MESSAGES)  # the fake's count: one token per word or symbol
    text = "".join(m["content"] for m in MESSAGES)
    assert est >= len(text.encode())  # BPE: at least one byte per token


def test_chars_estimator_is_closer() -> None:
    body = {"messages": MESSAGES}
    assert estimate_prompt(body, "chat", "chars") < estimate_prompt(body, "chat", "bytes")
    assert estimate_prompt({"input": ["abcd", "efgh"]}, "embeddings", "chars") == 4


def test_completion_cap() -> None:
    assert completion_cap({}) is None
    assert completion_cap({"max_tokens": 100}) == 100
    # both sent: the larger, whichever of the two the provider honours
    assert completion_cap({"max_completion_tokens": 50, "max_tokens": 100}) == 100
    assert completion_cap({"max_completion_tokens": 150, "max_tokens": 100}) == 150
    assert completion_cap({"max_completion_tokens": None, "max_tokens": 100}) == 100
    assert completion_cap({"max_tokens": 10, "n": 3}) == 30
    for bad in ({"max_tokens": 0}, {"max_tokens": "9"}, {"max_tokens": True}, {"n": 500}):
        with pytest.raises(UsageError):
            completion_cap(bad)


def test_body_usage_and_estimate() -> None:
    body = {
        "choices": [{"message": {"content": "x" * 40}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3},
    }
    assert body_usage(json.dumps(body).encode()) == Usage(7, 3)
    del body["usage"]
    assert body_usage(json.dumps(body).encode()) is None
    assert reply_estimate(json.dumps(body).encode()) == 10
    assert body_usage(b"not json") is None
    assert body_usage(b'{"usage": {"prompt_tokens": -1}}') is None


def test_stream_events() -> None:
    role = b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
    token = b'data: {"choices":[{"index":0,"delta":{"content":" hi"}}]}\n\n'
    tool = b'data: {"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}\n\n'
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\n'
    assert read_event(role).tokens == 0
    assert read_event(token).tokens == 1 and read_event(tool).tokens == 1
    parsed = read_event(usage)
    assert parsed.usage == Usage(5, 2) and parsed.usage_only
    for other in (b"data: [DONE]\n\n", b": keep-alive\n\n", b"data: {broken\n\n"):
        assert read_event(other).tokens == 0 and read_event(other).usage is None


OPENAI = "https://api.openai.com/v1"
OTHER = "http://127.0.0.1:9900/v1"


def test_the_cap_goes_into_one_field_and_never_both() -> None:
    assert cap_field({}, OTHER) == "max_tokens"
    assert cap_field({}, OPENAI) == "max_completion_tokens"  # max_tokens is deprecated there
    # the agent named a field (even as null): that one, whoever the provider is
    assert cap_field({"max_completion_tokens": None}, OTHER) == "max_completion_tokens"
    assert cap_field({"max_tokens": None}, OPENAI) == "max_tokens"
    body: dict[str, object] = {"max_completion_tokens": None, "max_tokens": None}
    assert write_cap(body, 64, OTHER) == "max_completion_tokens"
    assert body == {"max_completion_tokens": 64}
    body = {"messages": []}
    write_cap(body, 32, OPENAI)
    assert body == {"messages": [], "max_completion_tokens": 32}
    assert choice_cap({"max_tokens": 7, "n": 3}) == 7
    assert choice_cap({"max_tokens": "lots"}) is None and choice_cap({}) is None


def test_absurd_usage_is_no_usage_and_is_counted() -> None:
    ok = {"usage": {"prompt_tokens": MAX_USAGE_TOKENS, "completion_tokens": 0}}
    assert usage_counts(ok, "unit") == (MAX_USAGE_TOKENS, 0)
    assert usage_counts({"usage": {"prompt_tokens": 12}}, "unit") == (12, 0)  # embeddings
    before = USAGE_REJECTED["unit"]
    for bad in (
        {"usage": {"prompt_tokens": 10**19, "completion_tokens": 3}},
        {"usage": {"prompt_tokens": 3, "completion_tokens": MAX_USAGE_TOKENS + 1}},
        {"usage": {"prompt_tokens": -1, "completion_tokens": 3}},
        {"usage": {"prompt_tokens": True, "completion_tokens": 3}},
        {"usage": {"prompt_tokens": "3", "completion_tokens": 3}},
    ):
        assert usage_counts(bad, "unit") is None
        assert body_usage(json.dumps(bad).encode()) is None
    assert USAGE_REJECTED["unit"] == before + 5
    absent: list[object] = [{}, {"usage": None}, {"usage": {}}, {"usage": {"total_tokens": 9}}, []]
    for value in absent:
        assert usage_counts(value, "unit") is None
    # the chunk include_usage adds is still recognised (and stripped) when its usage is absurd
    huge = b'data: {"choices":[],"usage":{"prompt_tokens":10000000000000000000}}\n\n'
    event = read_event(huge)
    assert event.usage is None and event.usage_only
