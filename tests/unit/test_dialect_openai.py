"""The OpenAI dialects as the filters read them: prompt estimators, output caps, usage, stream
events (chat completions and embeddings). Pure."""

from __future__ import annotations

import json
from typing import Any

import pytest

from holdfast.dialects import RequestRefused, Usage, openai_chat, openai_embeddings
from holdfast.dialects.base import MAX_USAGE_TOKENS, USAGE_REJECTED
from holdfast.dialects.openai_chat import ChatRequest, usage_of
from holdfast_devtools.fakellm.generate import prompt_tokens

MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "a b c d e f g, h; i? j! ünïcödé 数字"},
]
CHAT = openai_chat.DIALECT
EMBEDDINGS = openai_embeddings.DIALECT


def chat(**body: Any) -> ChatRequest:
    return CHAT.parse({"model": "m", "messages": [{"role": "user", "content": "x"}], **body})


def cap(**body: Any) -> int | None:
    """The most output the request allows over all its choices (None: no cap sent)."""
    per_choice, choices = chat(**body).output_cap()
    return per_choice * choices if per_choice is not None else None


def test_bytes_estimator_is_an_upper_bound() -> None:
    est = chat(messages=MESSAGES).prompt_estimate("bytes")
    assert est >= prompt_tokens(MESSAGES)  # the fake's count: one token per word or symbol
    text = "".join(m["content"] for m in MESSAGES)
    assert est >= len(text.encode())  # BPE: at least one byte per token


def test_chars_estimator_is_closer() -> None:
    request = chat(messages=MESSAGES)
    assert request.prompt_estimate("chars") < request.prompt_estimate("bytes")
    embeddings = EMBEDDINGS.parse({"model": "m", "input": ["abcd", "efgh"]})
    assert embeddings.prompt_estimate("chars") == 4


def test_completion_cap() -> None:
    assert cap() is None
    assert cap(max_tokens=100) == 100
    # both sent: the larger, whichever of the two the provider honours
    assert cap(max_completion_tokens=50, max_tokens=100) == 100
    assert cap(max_completion_tokens=150, max_tokens=100) == 150
    assert cap(max_completion_tokens=None, max_tokens=100) == 100
    assert cap(max_tokens=10, n=3) == 30
    for bad in ({"max_tokens": 0}, {"max_tokens": "9"}, {"max_tokens": True}, {"n": 500}):
        with pytest.raises(RequestRefused):
            cap(**bad)


def test_body_usage_and_estimate() -> None:
    body: dict[str, Any] = {
        "choices": [{"message": {"content": "x" * 40}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3},
    }
    answer = CHAT.decode_body(json.dumps(body).encode())
    assert answer is not None and answer.usage == Usage(7, 3)
    del body["usage"]
    answer = CHAT.decode_body(json.dumps(body).encode())
    assert answer is not None and answer.usage is None and answer.completion_estimate == 10
    assert CHAT.decode_body(b"not json") is None
    broken = CHAT.decode_body(b'{"choices": [], "usage": {"prompt_tokens": -1}}')
    assert broken is not None and broken.usage is None and broken.choices == 0
    vectors = EMBEDDINGS.decode_body(b'{"data": [], "usage": {"prompt_tokens": 12}}')
    assert vectors is not None and vectors.usage == Usage(12, 0)


def test_stream_events() -> None:
    role = b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
    token = b'data: {"choices":[{"index":0,"delta":{"content":" hi"}}]}\n\n'
    tool = b'data: {"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}\n\n'
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\n'
    decoder = CHAT.stream_decoder()
    assert decoder.feed(role).content == 0
    assert decoder.feed(token).content == 1 and decoder.feed(tool).content == 1
    parsed = decoder.feed(usage)
    assert parsed.usage == Usage(5, 2) and parsed.usage_only
    for other in (b"data: [DONE]\n\n", b": keep-alive\n\n", b"data: {broken\n\n"):
        view = CHAT.stream_decoder().feed(other)
        assert view.content == 0 and view.usage is None
    assert CHAT.stream_decoder().feed(b"data: [DONE]\n\n").done


OPENAI = "https://api.openai.com/v1"
OTHER = "http://127.0.0.1:9900/v1"


def test_the_cap_goes_into_one_field_and_never_both() -> None:
    assert chat().write_output_cap(1, OTHER) == "max_tokens"
    assert chat().write_output_cap(1, OPENAI) == "max_completion_tokens"  # max_tokens deprecated
    # the agent named a field (even as null): that one, whoever the provider is
    assert chat(max_completion_tokens=None).write_output_cap(1, OTHER) == "max_completion_tokens"
    assert chat(max_tokens=None).write_output_cap(1, OPENAI) == "max_tokens"
    # the view itself, over bodies the door would refuse (no messages): only the cap changes
    request = ChatRequest({"model": "m", "max_completion_tokens": None, "max_tokens": None})
    assert request.write_output_cap(64, OTHER) == "max_completion_tokens"
    assert request.body == {"model": "m", "max_completion_tokens": 64}
    request = ChatRequest({"model": "m", "messages": []})
    request.write_output_cap(32, OPENAI)
    assert request.body == {"model": "m", "messages": [], "max_completion_tokens": 32}
    assert chat(max_tokens=7, n=3).output_cap() == (7, 3)
    assert chat().output_cap() == (None, 1)
    with pytest.raises(RequestRefused):
        chat(max_tokens="lots").output_cap()


def test_stream_usage_is_asked_for_and_the_agents_own_choice_kept() -> None:
    request = chat(stream=True)
    assert request.ask_stream_usage() is False  # the sidecar asked: strip it on the way back
    assert request.body["stream_options"] == {"include_usage": True}
    asked = chat(stream=True, stream_options={"include_usage": True, "x": 1})
    assert asked.ask_stream_usage() is True
    assert asked.body["stream_options"] == {"include_usage": True, "x": 1}


def test_absurd_usage_is_no_usage_and_is_counted() -> None:
    ok = {"usage": {"prompt_tokens": MAX_USAGE_TOKENS, "completion_tokens": 0}}
    assert usage_of(ok, "unit") == Usage(MAX_USAGE_TOKENS, 0)
    assert usage_of({"usage": {"prompt_tokens": 12}}, "unit") == Usage(12, 0)  # embeddings
    before = USAGE_REJECTED["unit"]
    for bad in (
        {"usage": {"prompt_tokens": 10**19, "completion_tokens": 3}},
        {"usage": {"prompt_tokens": 3, "completion_tokens": MAX_USAGE_TOKENS + 1}},
        {"usage": {"prompt_tokens": -1, "completion_tokens": 3}},
        {"usage": {"prompt_tokens": True, "completion_tokens": 3}},
        {"usage": {"prompt_tokens": "3", "completion_tokens": 3}},
    ):
        assert usage_of(bad, "unit") is None
        answer = CHAT.decode_body(json.dumps({"choices": [], **bad}).encode())
        assert answer is not None and answer.usage is None
    assert USAGE_REJECTED["unit"] == before + 5
    absent: list[object] = [{}, {"usage": None}, {"usage": {}}, {"usage": {"total_tokens": 9}}, []]
    for value in absent:
        assert usage_of(value, "unit") is None
    # the chunk include_usage adds is still recognised (and stripped) when its usage is absurd
    huge = b'data: {"choices":[],"usage":{"prompt_tokens":10000000000000000000}}\n\n'
    event = CHAT.stream_decoder().feed(huge)
    assert event.usage is None and event.usage_only


def test_the_request_as_the_filters_read_it() -> None:
    request = chat(
        user="alice",
        messages=[
            {"role": "system", "content": "@prompt:triage"},
            {"role": "user", "content": [{"type": "text", "text": "first"}]},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "the last question"},
        ],
        tools=[
            {"type": "function", "function": {"name": "find", "parameters": {"type": "object"}}}
        ],
    )
    assert request.session_hint == "alice" and chat(user="").session_hint is None
    assert request.last_user_text(8) == "the last"
    assert request.text_chars() == len("@prompt:triage") + len("first") + 2 + len(
        "the last question"
    )
    [slot] = request.system_slots()
    assert (slot.position, slot.text, slot.where) == (0, "@prompt:triage", "messages[0]")
    request.set_system(0, "You triage.")
    request.insert_system("Be kind.")
    assert [m["content"] for m in request.body["messages"][:2]] == ["Be kind.", "You triage."]
    [tool] = request.declared_tools()
    assert (tool.name, tool.parameters) == ("find", {"type": "object"})
    tool.replace({"type": "object", "required": ["q"]})
    assert request.body["tools"][0]["function"]["parameters"]["required"] == ["q"]
    copy = request.shadow_copy("other-model")
    assert copy["model"] == "other-model" and copy["stream"] is False
    with pytest.raises(RequestRefused, match="model"):
        CHAT.parse({"messages": []})
    with pytest.raises(RequestRefused, match="messages"):
        chat(messages="x").insert_system("nope")


def test_errors_in_openais_shape() -> None:
    body = CHAT.error_body("over budget", "quota", "budget_exhausted", "agent:a")
    assert body == {
        "error": {
            "message": "over budget",
            "type": "insufficient_quota",
            "code": "budget_exhausted",
            "param": "agent:a",
        }
    }
    event = CHAT.stream_error("stalled", "upstream", "upstream_timeout")
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    assert json.loads(event[6:])["error"]["type"] == "upstream_error"
