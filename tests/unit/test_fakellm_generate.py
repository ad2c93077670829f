"""The fake upstream's pure parts: content, token arithmetic, behaviour rules, wire format."""

from __future__ import annotations

import base64
import json
import math
import struct
from typing import Any

import pytest

from holdfast_devtools.fakellm import protocol
from holdfast_devtools.fakellm.behaviour import (
    Behaviour,
    BehaviourError,
    BehaviourTable,
    behaviour_from_json,
    error_due,
)
from holdfast_devtools.fakellm.generate import ChatRequest, compose_reply, count_tokens, embedding
from holdfast_devtools.fakellm.protocol import ApiError, parse_chat, parse_embeddings

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 3, "maxLength": 12},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
        "threshold": {"type": "number", "minimum": -5, "maximum": 5},
        "alerts": {"type": "boolean"},
        "note": {"type": ["null", "string"]},
        "where": {"type": "object", "properties": {"lat": {"type": "number"}}},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
    },
    "required": ["city", "unit", "days"],
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}},
    {"type": "function", "function": {"name": "get", "parameters": {"type": "object"}}},
]


def chat(
    text: str = "What is the weather?", model: str = "gpt-4o-mini", **over: Any
) -> ChatRequest:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
    body.update(over)
    return parse_chat(body)


def reply_text(request: ChatRequest, length: int = 12) -> str:
    content = compose_reply(request, length=length, tool_calls_on=False).message["content"]
    assert isinstance(content, str)
    return content


def test_reply_is_deterministic_and_model_dependent() -> None:
    first = reply_text(chat())
    assert first == reply_text(chat())
    assert first.startswith("[gpt-4o-mini] ")
    other = reply_text(chat(model="gpt-4o"))
    assert other.startswith("[gpt-4o] ")
    assert first.split()[1:] != other.split()[1:]
    assert reply_text(chat("something else")) != first
    assert reply_text(chat("lone \ud800 surrogate")).startswith("[gpt-4o-mini]")


def test_reply_length_and_max_tokens_truncation() -> None:
    full = compose_reply(chat(), length=12, tool_calls_on=False)
    assert (full.completion_tokens, full.finish_reason) == (12, "stop")
    assert "".join(str(d["content"]) for d in full.deltas) == full.message["content"]
    short = compose_reply(chat(max_tokens=5), length=12, tool_calls_on=False)
    assert (short.completion_tokens, short.finish_reason) == (5, "length")
    assert str(full.message["content"]).startswith(str(short.message["content"]))
    newer = compose_reply(
        chat(max_completion_tokens=3, max_tokens=9), length=12, tool_calls_on=False
    )
    assert newer.completion_tokens == 3
    roomy = compose_reply(chat(max_tokens=50), length=12, tool_calls_on=False)
    assert (roomy.completion_tokens, roomy.finish_reason) == (12, "stop")


def test_prompt_token_rule() -> None:
    assert count_tokens("Hi, there!") == 4  # Hi , there !
    assert count_tokens("don't   stop") == 4  # don ' t stop
    messages = [
        {"role": "system", "content": "You are terse."},  # 4 + 3
        {"role": "user", "content": [{"type": "text", "text": "Hi, there!"}]},  # 4 + 3
        {"role": "assistant", "content": None},  # 0 + 3
    ]
    request = parse_chat({"model": "m", "messages": messages})
    assert request.prompt_tokens == 17
    assert request.user_text == "Hi, there!"


def fits(value: Any, schema: dict[str, Any]) -> bool:
    """Just enough of JSON Schema to check values made for WEATHER_SCHEMA."""
    kind = schema.get("type")
    if isinstance(kind, list):
        return any(fits(value, {**schema, "type": k}) for k in kind)
    if "enum" in schema:
        return value in schema["enum"]
    if kind == "string":
        return isinstance(value, str) and (
            schema.get("minLength", 0) <= len(value) <= schema.get("maxLength", 10**9)
        )
    if kind in ("integer", "number"):
        wanted = int if kind == "integer" else int | float
        return (
            isinstance(value, wanted)
            and not isinstance(value, bool)
            and schema.get("minimum", -math.inf) <= value <= schema.get("maximum", math.inf)
        )
    if kind == "array":
        items = schema["items"]
        return (
            isinstance(value, list)
            and len(value) >= schema.get("minItems", 0)
            and all(fits(item, items) for item in value)
        )
    if kind == "object":
        properties: dict[str, Any] = schema.get("properties", {})
        return (
            isinstance(value, dict)
            and all(name in value for name in schema.get("required", []))
            and all(fits(value[k], sub) for k, sub in properties.items() if k in value)
        )
    return value is None if kind == "null" else isinstance(value, bool)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "gpt-4o", "claude-ish", "m3"])
@pytest.mark.parametrize("text", ["weather in Oslo?", "call:get_weather now", "x"])
def test_tool_call_arguments_fit_schema(model: str, text: str) -> None:
    request = chat(
        text, model=model, tools=TOOLS, tool_choice={"function": {"name": "get_weather"}}
    )
    reply = compose_reply(request, length=12, tool_calls_on=False)
    assert reply.finish_reason == "tool_calls"
    message: Any = reply.message
    (call,) = message["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    arguments = json.loads(call["function"]["arguments"])
    assert fits(arguments, WEATHER_SCHEMA), arguments
    assert set(arguments) == set(WEATHER_SCHEMA["properties"])
    deltas: Any = reply.deltas
    fragments = [d["tool_calls"][0]["function"]["arguments"] for d in deltas]
    assert fragments[0] == "" and len(fragments) > 3
    assert "".join(fragments) == call["function"]["arguments"]
    assert deltas[0]["tool_calls"][0]["id"] == call["id"]
    assert reply.completion_tokens == len(fragments)


def test_which_tool_is_called() -> None:
    def pick(text: str, on: bool, **over: Any) -> str | None:
        reply = compose_reply(chat(text, tools=TOOLS, **over), length=4, tool_calls_on=on)
        calls = reply.message.get("tool_calls")
        return calls[0]["function"]["name"] if isinstance(calls, list) else None

    assert pick("please call:get_weather.", on=False) == "get_weather"  # not the prefix "get"
    assert pick("call:get", on=False) == "get"
    bare = compose_reply(chat("call:get", tools=TOOLS), length=4, tool_calls_on=False)
    assert json.loads(bare.message["tool_calls"][0]["function"]["arguments"]) == {}  # type: ignore[index]
    assert pick("call:unknown", on=False) is None
    assert pick("hello", on=False) is None
    assert pick("hello", on=True) in ("get", "get_weather")
    assert pick("hello", on=False, tool_choice="required") in ("get", "get_weather")
    assert pick("call:get", on=True, tool_choice="none") is None
    assert compose_reply(chat("call:get"), length=4, tool_calls_on=True).finish_reason == "stop"


def test_embeddings_are_deterministic_unit_vectors() -> None:
    vector = embedding("text-embedding-3-small", "hello", 16)
    assert vector == embedding("text-embedding-3-small", "hello", 16)
    assert vector != embedding("other-model", "hello", 16)
    assert math.isclose(math.fsum(v * v for v in vector), 1.0)
    assert len(embedding("m", "x", 300)) == 300
    request = parse_embeddings({"model": "m", "input": "a b", "encoding_format": "base64"})
    body = protocol.embeddings_body(request, [vector], with_usage=True)
    encoded = body["data"][0]["embedding"]  # type: ignore[index]
    decoded = struct.unpack("<16f", base64.b64decode(encoded))
    assert all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(decoded, vector, strict=True))
    assert body["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    assert parse_embeddings({"model": "m", "input": ["a", "b"], "dimensions": 8}).dimensions == 8


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([], None),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"content": "x"}]}, "messages"),
        ({"model": "m", "messages": [{"role": "user"}], "n": 2}, "n"),
        ({"model": "m", "messages": [{"role": "user"}], "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": [{"role": "user"}], "max_tokens": True}, "max_tokens"),
        ({"model": "m", "messages": [{"role": "user"}], "tools": [{"type": "x"}]}, "tools"),
        ({"model": "m", "messages": [{"role": "user"}], "tool_choice": "any"}, "tool_choice"),
    ],
)
def test_chat_validation(body: object, param: str | None) -> None:
    with pytest.raises(ApiError) as info:
        parse_chat(body)
    assert (info.value.status, info.value.param) == (400, param)
    error: Any = info.value.body()["error"]
    assert set(error) == {"message", "type", "code", "param"}


@pytest.mark.parametrize(
    "body",
    [
        {"input": "x"},
        {"model": "m", "input": [1, 2]},
        {"model": "m", "input": []},
        {"model": "m", "input": "x", "dimensions": 5000},
        {"model": "m", "input": "x", "encoding_format": "int8"},
    ],
)
def test_embedding_validation(body: object) -> None:
    with pytest.raises(ApiError):
        parse_embeddings(body)


def test_error_schedule_is_exact() -> None:
    failing = [n for n in range(1, 13) if error_due(n, 0.25)]
    assert failing == [4, 8, 12]
    assert [n for n in range(1, 7) if error_due(n, 0.5)] == [2, 4, 6]
    assert sum(error_due(n, 0.1) for n in range(1, 101)) == 10
    assert sum(error_due(n, 1 / 3) for n in range(1, 31)) == 10
    assert all(error_due(n, 1.0) for n in range(1, 10))
    assert not any(error_due(n, 0.0) for n in range(1, 10))


def test_behaviour_table_counts_per_model_and_restarts_on_set() -> None:
    table = BehaviourTable(Behaviour(error_rate=0.5, error_status=503))
    assert [table.admit("a")[2] for _ in range(4)] == [False, True, False, True]
    assert table.admit("b")[2] is False  # b has its own counter
    table.set("a", {"error_rate": 0.25})
    assert [table.admit("a")[2] for _ in range(4)] == [False, False, False, True]
    assert table.get("a").error_status == 503  # an override starts from the defaults
    assert table.stats["a"].requests == 8 and table.stats["a"].errors == 3
    assert table.clear("a") and not table.clear("a")
    table.stats["b"].in_flight = 1
    table.reset()
    assert list(table.stats) == ["b"] and table.stats["b"].requests == 0
    assert table.stats["b"].in_flight == 1


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"latency": 5}, r"unknown behaviour field\(s\): latency"),
        ({"error_rate": 1.5}, "error_rate"),
        ({"error_rate": "0.5"}, "error_rate"),
        ({"error_status": 200}, "error_status"),
        ({"completion_tokens": 0}, "completion_tokens"),
        ({"completion_tokens": True}, "completion_tokens"),
        ({"stall_after_tokens": -1}, "stall_after_tokens"),
        ({"tool_calls": 1}, "tool_calls"),
        ({"first_byte_ms": -2}, "first_byte_ms"),
        ([1, 2], "JSON object"),
    ],
)
def test_behaviour_validation(fields: object, reason: str) -> None:
    with pytest.raises(BehaviourError, match=reason):
        behaviour_from_json(fields, Behaviour())


def test_behaviour_from_json_keeps_base() -> None:
    base = Behaviour(latency_ms=5, completion_tokens=3)
    merged = behaviour_from_json({"reset_after_tokens": 2, "omit_usage": True}, base)
    assert (merged.latency_ms, merged.completion_tokens) == (5, 3)
    assert (merged.reset_after_tokens, merged.omit_usage) == (2, True)
    assert json.loads(json.dumps(merged.to_json()))["reset_after_tokens"] == 2


def test_chunk_frames_are_valid_sse_json() -> None:
    frames = protocol.ChunkFrames("chatcmpl-1", "m")
    for frame in (frames.delta({"content": "hi"}), frames.delta({}, "stop"), frames.usage(3, 4)):
        assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
        chunk = json.loads(frame[len(b"data: ") :])
        assert chunk["object"] == "chat.completion.chunk" and chunk["model"] == "m"
    assert json.loads(frames.usage(3, 4)[6:])["usage"]["total_tokens"] == 7
    assert json.loads(frames.delta({}, "stop")[6:])["choices"][0]["finish_reason"] == "stop"
