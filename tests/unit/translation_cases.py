"""Builders for the translation table's cases (tests/unit/test_translation_table.py): requests
through a pair, provider answers and streams, and the agent's side read back with the client
libraries' own models and stream accumulators. Pure: no event loop."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.lib.streaming.responses import ResponseStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from holdfast.dialects import EventView
from holdfast.translate import BY_NAME, Translation, Untranslatable
from holdfast.translate.messages import event as a_event
from sidecar.pipeline.sse import SseEvents

C2M = "openai.chat->anthropic.messages"
M2C = "anthropic.messages->openai.chat"
R2C = "openai.responses->openai.chat"
R2M = "openai.responses->anthropic.messages"
BASE = "https://provider.example/v1"
ANTHROPIC_EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
RESPONSES_EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)

ROWS: dict[str, Callable[[], None]] = {}


def row(*ids: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """Register a case for one or more rows of the table."""

    def register(case: Callable[[], None]) -> Callable[[], None]:
        for i in ids:
            assert i not in ROWS, f"row {i} has two cases"
            ROWS[i] = case
        return case

    return register


# -- requests ------------------------------------------------------------------------------


def chat_body(**over: Any) -> dict[str, Any]:
    return {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}], **over}


def messages_body(**over: Any) -> dict[str, Any]:
    return {
        "model": "gpt-x",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "hi"}],
        **over,
    }


def responses_body(**over: Any) -> dict[str, Any]:
    return {"model": "m-x", "input": "hi", **over}


def out(pair: str, body: dict[str, Any], base_url: str = BASE) -> dict[str, Any]:
    """The provider's request for the agent's ``body`` through ``pair``."""
    return Translation(BY_NAME[pair], json.loads(json.dumps(body))).request(base_url)


def refused(pair: str, body: dict[str, Any]) -> Untranslatable:
    with pytest.raises(Untranslatable) as info:
        out(pair, body)
    assert info.value.param, "a refusal names the agent's field"
    return info.value


# -- whole answers -------------------------------------------------------------------------


def anthropic_message(content: list[dict[str, Any]], stop: str = "end_turn", **usage: int) -> Any:
    counts = {"input_tokens": 10, "output_tokens": 5, **usage}
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": counts,
    }


def chat_completion(message: dict[str, Any], finish: str = "stop", **usage: Any) -> Any:
    counts = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, **usage}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-x",
        "choices": [
            {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
        ],
        "usage": counts,
    }


def answer(pair: str, provider: Any, body: dict[str, Any] | None = None) -> Any:
    """The agent's answer, read with its client library's model."""
    agent_body = (
        body
        or {"chat": chat_body, "anthropic": messages_body}.get(pair.split(".")[0], responses_body)()
    )
    _, data = Translation(BY_NAME[pair], agent_body).answer(json.dumps(provider).encode())
    obj = json.loads(data)
    if pair.startswith("openai.chat"):
        return ChatCompletion.model_validate(obj)
    if pair.startswith("anthropic"):
        return Message.model_validate(obj)
    return Response.model_validate(obj)


def error(pair: str, status: int, provider: Any) -> dict[str, Any]:
    body = {"openai.chat": chat_body, "anthropic.messages": messages_body}.get(
        BY_NAME[pair].agent, responses_body
    )()
    raw = provider if isinstance(provider, bytes) else json.dumps(provider).encode()
    out_: dict[str, Any] = json.loads(Translation(BY_NAME[pair], body).error(status, raw))
    return out_


# -- streams -------------------------------------------------------------------------------


def a_stream(
    blocks: Iterable[bytes], stop: str = "end_turn", output: int = 5, **usage: int
) -> list[bytes]:
    """A Messages stream: message_start (the prompt's usage), ``blocks``' events, the end."""
    start_usage = {"input_tokens": 10, "output_tokens": 1, **usage}
    message: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    return [
        a_event("message_start", {"message": message}),
        a_event("ping", {}),
        *blocks,
        a_event(
            "message_delta",
            {
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": output},
            },
        ),
        a_event("message_stop", {}),
    ]


def a_text(index: int, *pieces: str) -> list[bytes]:
    start = {"index": index, "content_block": {"type": "text", "text": ""}}
    deltas = [{"index": index, "delta": {"type": "text_delta", "text": p}} for p in pieces]
    return [
        a_event("content_block_start", start),
        *(a_event("content_block_delta", d) for d in deltas),
        a_event("content_block_stop", {"index": index}),
    ]


def a_tool(index: int, call_id: str, name: str, *fragments: str) -> list[bytes]:
    block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
    parts = [
        {"index": index, "delta": {"type": "input_json_delta", "partial_json": f}}
        for f in fragments
    ]
    return [
        a_event("content_block_start", {"index": index, "content_block": block}),
        *(a_event("content_block_delta", p) for p in parts),
        a_event("content_block_stop", {"index": index}),
    ]


def c_chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    obj = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-x",
        "choices": choices,
        **extra,
    }
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


C_DONE = b"data: [DONE]\n\n"


def c_usage(prompt: int = 10, completion: int = 5, cached: int = 0) -> bytes:
    usage = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }
    return c_chunk(None, usage=usage)


def c_stream(
    *deltas: dict[str, Any], finish: str = "stop", usage: bytes | None = None
) -> list[bytes]:
    return [
        c_chunk({"role": "assistant", "content": ""}),
        *(c_chunk(d) for d in deltas),
        c_chunk({}, finish),
        usage if usage is not None else c_usage(),
        C_DONE,
    ]


def translated(
    pair: str, provider_events: list[bytes], body: dict[str, Any]
) -> tuple[bytes, list[EventView]]:
    """The agent's bytes for a provider stream, and the views the filters would read."""
    translation = Translation(BY_NAME[pair], body).stream()
    raw, views = b"", []
    for event in SseEvents().feed(b"".join(provider_events)):
        for view, data in translation.feed(event):
            views.append(view)
            raw += data
    return raw, views


def sse_objects(raw: bytes) -> list[tuple[str, Any]]:
    """(event name, data) of each event ("" without a name; the data "[DONE]" as a string)."""
    out_: list[tuple[str, Any]] = []
    for event in SseEvents().feed(raw):
        name, data = "", ""
        for line in event.decode().splitlines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
        out_.append((name, data if data == "[DONE]" else json.loads(data)))
    return out_


def chat_final(raw: bytes) -> tuple[Any, list[ChatCompletionChunk]]:
    """The openai SDK's own accumulation of a translated chat stream."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    chunks = []
    for _, data in sse_objects(raw):
        if data == "[DONE]":
            break
        assert "error" not in data, data
        chunk = ChatCompletionChunk.model_validate(data)
        chunks.append(chunk)
        list(state.handle_chunk(chunk))
    return state.get_final_completion(), chunks


def anthropic_final(raw: bytes) -> tuple[Any, list[str]]:
    """The anthropic SDK's own accumulation of a translated Messages stream (every event
    validated against its model, named as its ``type``)."""
    snapshot, bufs, kinds = None, {}, []  # type: ignore[var-annotated]
    for name, data in sse_objects(raw):
        assert name == data["type"], (name, data)
        kinds.append(name)
        if name in ("error", "ping"):
            continue
        event = ANTHROPIC_EVENTS.validate_python(data)
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=bufs)
    return snapshot, kinds


def responses_final(raw: bytes, tools: Any = None) -> tuple[Any, list[str]]:
    """The openai SDK's own accumulation of a translated Responses stream (every event
    validated, named as its ``type``, numbered in order)."""
    from openai import omit

    state: ResponseStreamState[Any] = ResponseStreamState(
        input_tools=tools or omit, text_format=omit
    )
    kinds: list[str] = []
    final = None
    for seq, (name, data) in enumerate(sse_objects(raw)):
        assert name == data["type"] and data["sequence_number"] == seq, (name, seq, data)
        kinds.append(name)
        event = RESPONSES_EVENTS.validate_python(data)
        if name == "error":
            continue
        for e in state.handle_event(event):
            if e.type in ("response.completed", "response.incomplete"):
                final = e.response
    return final, kinds
