"""Estimators and usage readers of the budget filter."""

from __future__ import annotations

import json

import pytest

from holdfast.fakellm.generate import prompt_tokens
from sidecar.budget_usage import (
    Usage,
    UsageError,
    body_usage,
    completion_cap,
    estimate_prompt,
    read_event,
    reply_estimate,
)

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
    assert completion_cap({"max_completion_tokens": 50, "max_tokens": 100}) == 50
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
