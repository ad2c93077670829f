"""The Anthropic Messages dialect as the filters read it: validation, the request view (system
slots, tools, caps, estimates, session hint), answers, the stream decoder (usage across
message_start and message_delta, tool_use assembled per content block, cut streams, another
API's stream) and the error shape for every code of the sidecar's table. Pure."""

from __future__ import annotations

import json
from typing import Any

import pytest

from holdfast import dialects
from holdfast.dialects import RequestRefused, Usage, anthropic_messages
from holdfast.dialects.anthropic_messages import MessagesRequest, MessagesStream
from holdfast.dialects.base import MAX_USAGE_TOKENS, USAGE_REJECTED
from holdfast.dialects.sse import data_event
from holdfast_devtools.fakellm import anthropic as fake
from holdfast_devtools.fakellm.generate import count_tokens
from sidecar.errors import ERROR_TABLE

MESSAGES = anthropic_messages.DIALECT
COUNT = anthropic_messages.COUNT_DIALECT
USER = {"role": "user", "content": "a b c d e f g, h; i? j! ünïcödé 数字"}


def req(**body: Any) -> MessagesRequest:
    return MESSAGES.parse({"model": "m", "max_tokens": 100, "messages": [USER], **body})


def event(kind: str, **payload: Any) -> bytes:
    return data_event({"type": kind, **payload}, event=kind)


def test_registered_with_its_paths_and_provider() -> None:
    assert dialects.by_name("anthropic.messages") is MESSAGES
    assert MESSAGES.paths == ("/v1/messages",) and COUNT.paths == ("/v1/messages/count_tokens",)
    assert MESSAGES.provider_api == COUNT.provider_api == "anthropic"
    assert MESSAGES.session_headers == ("X-Claude-Code-Session-Id",)
    assert MESSAGES.checks_answers and not dialects.by_name("openai.chat").checks_answers


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [USER], "max_tokens": 5}, "model"),
        ({"model": "m", "messages": [USER]}, "max_tokens"),
        ({"model": "m", "messages": [USER], "max_tokens": True}, "max_tokens"),
        ({"model": "m", "max_tokens": 5}, "messages"),
        ({"model": "m", "max_tokens": 5, "messages": {"role": "user"}}, "messages"),
        ({"model": "m", "max_tokens": 5, "messages": ["hi"]}, "messages.0.role"),
        ({"model": "m", "max_tokens": 5, "messages": [{"role": "user"}]}, "messages.0.content"),
        ({"model": "m", "max_tokens": 5, "messages": [USER], "system": {"a": 1}}, "system"),
        ({"model": "m", "max_tokens": 5, "messages": [USER], "tools": "x"}, "tools"),
        ({"model": "m", "max_tokens": 5, "messages": [USER], "stream": 1}, "stream"),
        ({"model": "m", "max_tokens": 5, "messages": [USER], "metadata": "u"}, "metadata"),
        ({"model": "m", "max_tokens": 5, "messages": [USER], "metadata": {"user_id": 3}},
         "metadata"),
    ],
)  # fmt: skip
def test_validation_names_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestRefused) as info:
        MESSAGES.parse(body)
    assert info.value.param == param


def test_count_tokens_needs_no_cap_and_takes_none() -> None:
    view = COUNT.parse({"model": "m", "messages": [USER]})
    assert view.output_cap() == (None, 1) and not view.stream
    with pytest.raises(RequestRefused):
        view.write_output_cap(10, "https://api.anthropic.com/v1")
    assert COUNT.decode_body(b'{"input_tokens": 42}') is not None
    answer = COUNT.decode_body(b'{"input_tokens": 42}')
    assert answer is not None and answer.usage == Usage(0, 0)  # counting is free
    assert COUNT.decode_body(b'{"choices": []}') is None


def test_request_view_reads_and_writes_through_neutral_questions() -> None:
    view = req(stream=True, metadata={"user_id": "ada"})
    assert view.stream and view.session_hint == "ada" and view.output_cap() == (100, 1)
    assert view.write_output_cap(7, "x") == "max_tokens" and view.body["max_tokens"] == 7
    assert view.ask_stream_usage()  # always carried: nothing to add, nothing to strip
    assert "stream_options" not in view.body
    assert req().session_hint is None
    view.set_model("claude-x")
    assert view.shadow_copy("other") == {**view.body, "model": "other", "stream": False}
    assert view.body["model"] == "claude-x"


def test_system_slots_string_and_blocks_and_insertion() -> None:
    view = req(system="@prompt:a")
    assert [(s.position, s.text, s.where) for s in view.system_slots()] == [
        (0, "@prompt:a", "system")
    ]
    view.set_system(0, "You help.")
    assert view.body["system"] == "You help."
    view.insert_system("First.")
    assert view.body["system"] == [
        {"type": "text", "text": "First."},
        {"type": "text", "text": "You help."},
    ]
    cached = {"type": "text", "text": "@prompt:b", "cache_control": {"type": "ephemeral"}}
    view = req(system=[{"type": "image"}, cached])
    assert [(s.position, s.where) for s in view.system_slots()] == [(1, "system[1]")]
    view.set_system(1, "B")
    assert view.body["system"][1] == {**cached, "text": "B"}
    none = req()
    none.insert_system("Only.")
    assert none.body["system"] == "Only." and none.system_field == "system"


def test_declared_tools_are_custom_ones_and_replace_their_schema() -> None:
    schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    view = req(tools=[
        {"name": "search", "description": "s", "input_schema": schema},
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        {"type": "custom", "name": "other", "input_schema": {}},
    ])  # fmt: skip
    tools = view.declared_tools()
    assert [t.name for t in tools] == ["search", "other"] and tools[0].parameters == schema
    tools[0].replace({"type": "object"})
    assert view.body["tools"][0]["input_schema"] == {"type": "object"}


def test_estimates_cover_system_tools_and_every_block() -> None:
    blocks = [
        {"role": "user", "content": [{"type": "text", "text": "look this up"}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "t", "name": "search", "input": {"q": "holdfast"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": [
                {"type": "text", "text": "found it"}]},
            {"type": "text", "text": "and then?"}]},
    ]  # fmt: skip
    view = req(messages=blocks, system="Be brief.", tools=[{"name": "search", "input_schema": {}}])
    exact = count_tokens("Be brief. look this up holdfast found it and then?")
    assert view.prompt_estimate("bytes") >= exact
    assert view.prompt_estimate("bytes") >= len(json.dumps(blocks).encode()) - 64
    assert view.prompt_estimate("chars") < view.prompt_estimate("bytes")
    assert view.text_chars() == len("look this up") + len('{"q": "holdfast"}') + len(
        "found it"
    ) + len("and then?")
    assert view.last_user_text(5) == "and t"


def test_decode_body_text_tools_refusal_and_usage() -> None:
    body = {
        "type": "message",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Let me look. "},
            {"type": "tool_use", "id": "t1", "name": "search", "input": {"q": "é"}},
            {"type": "text", "text": "Done."},
        ],
        "stop_reason": "refusal",
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 5,
            "cache_read_input_tokens": 100,
            "output_tokens": 7,
        },
    }
    answer = MESSAGES.decode_body(json.dumps(body).encode())
    assert answer is not None
    assert answer.text == "Let me look. Done." and answer.refusal
    assert answer.usage == Usage(115, 7) and answer.choices == 1
    ((call),) = answer.tool_calls
    assert (call.name, call.index, json.loads(call.arguments)) == ("search", 2, {"q": "é"})
    for foreign in (b'{"choices": [{"message": {"content": "hi"}}]}', b"[]", b"nope",
                    b'{"type": "message", "content": "hi"}'):  # fmt: skip
        assert MESSAGES.decode_body(foreign) is None


@pytest.mark.parametrize(
    "usage",
    [
        {"input_tokens": -1, "output_tokens": 3},
        {"input_tokens": 1, "cache_read_input_tokens": "9", "output_tokens": 3},
        {"input_tokens": MAX_USAGE_TOKENS, "cache_read_input_tokens": 1, "output_tokens": 3},
        {"input_tokens": 1, "output_tokens": 10**12},
    ],
)
def test_absurd_usage_is_refused_and_counted(usage: dict[str, Any]) -> None:
    before = sum(USAGE_REJECTED.values())
    body = {"type": "message", "content": [], "usage": usage}
    answer = MESSAGES.decode_body(json.dumps(body).encode())
    assert answer is not None and answer.usage is None
    assert sum(USAGE_REJECTED.values()) == before + 1


def stream_of(*events: bytes) -> tuple[MessagesStream, list[Any]]:
    decoder = MESSAGES.stream_decoder()
    return decoder, [decoder.feed(e) for e in events]


START = event("message_start", message={"type": "message", "content": [], "usage": {
    "input_tokens": 20, "cache_read_input_tokens": 80, "output_tokens": 1}})  # fmt: skip


def test_stream_usage_is_known_from_message_start_and_final_at_message_delta() -> None:
    _, views = stream_of(
        START,
        event("ping"),
        event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        event("content_block_delta", index=0, delta={"type": "text_delta", "text": "x" * 40}),
        event("content_block_stop", index=0),
        event("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 3}),
        event("message_stop"),
    )
    assert views[0].usage == Usage(100, 1)
    assert views[1].usage is None and views[3].text == "x" * 40 and views[3].content == 1
    assert views[3].usage == Usage(100, 10)  # 40 characters streamed, the estimate is ahead
    assert views[5].usage == Usage(100, 3)  # the provider's final count wins
    assert views[6].done and not any(v.foreign or v.error for v in views)


def test_tool_use_blocks_assemble_per_index_and_complete_at_their_stop() -> None:
    def start(i: int, name: str) -> bytes:
        block = {"type": "tool_use", "id": f"t{i}", "name": name, "input": {}}
        return event("content_block_start", index=i, content_block=block)

    def part(i: int, text: str) -> bytes:
        return event("content_block_delta", index=i, delta={"type": "input_json_delta",
                                                            "partial_json": text})  # fmt: skip

    decoder, views = stream_of(
        START,
        event("content_block_start", index=0, content_block={"type": "thinking", "thinking": ""}),
        event("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "hm"}),
        event("content_block_delta", index=0, delta={"type": "signature_delta", "signature": "s"}),
        event("content_block_stop", index=0),
        start(1, "search"),
        part(1, '{"q": '),
    )
    assert views[2].content == 1 and views[3].content == 0  # thinking counts, signature not
    assert decoder.open_calls == ["search"]
    _, more = stream_of()
    rest = [decoder.feed(e) for e in (part(1, '"x"}'), event("content_block_stop", index=1),
                                      start(2, "lookup"), event("message_stop"))]  # fmt: skip
    ((call,),) = [v.calls for v in rest if v.calls][:1]
    assert (call.name, call.index, call.arguments) == ("search", 1, '{"q": "x"}')
    assert rest[1].calls and not rest[2].calls
    assert [c.name for c in rest[3].calls] == ["lookup"]  # closed by the stream's end
    assert decoder.open_calls == [] and more == []


def test_refusal_error_and_another_apis_stream() -> None:
    _, views = stream_of(START, event("message_delta", delta={"stop_reason": "refusal"},
                                      usage={"output_tokens": 2}))  # fmt: skip
    assert views[1].refusal
    _, views = stream_of(event("error", error={"type": "overloaded_error", "message": "busy"}))
    assert views[0].error and not views[0].foreign
    chunk = b'data: {"id": "c", "object": "chat.completion.chunk", "choices": []}\n\n'
    _, views = stream_of(chunk)
    assert views[0].foreign
    _, views = stream_of(START, event("future_event_type"))  # later: unknown types pass
    assert not views[1].foreign


@pytest.mark.parametrize("error", list(ERROR_TABLE))
def test_every_sidecar_error_has_an_anthropic_type(error: type) -> None:
    spec = ERROR_TABLE[error]
    body = MESSAGES.error_body("why", spec.kind, spec.code, "p")
    assert set(body) == {"type", "error"} and body["type"] == "error"
    inner = body["error"]
    assert inner["type"] in {
        "invalid_request_error", "not_found_error", "rate_limit_error", "api_error",
        "overloaded_error", "request_too_large",
    }  # fmt: skip
    assert inner["message"] == "why" and inner["code"] == spec.code and inner["param"] == "p"
    if spec.status == 429:
        assert inner["type"] == "rate_limit_error"
    if spec.code in ("overloaded", "shutting_down"):
        assert inner["type"] == "overloaded_error"
    streamed = MESSAGES.stream_error("why", spec.kind, spec.code)
    assert streamed.startswith(b"event: error\ndata: ") and streamed.endswith(b"\n\n")


def test_the_fakes_stream_decodes_to_its_whole_answer() -> None:
    """The fake upstream's two modes agree, as the decoder reads them (thinking and a tool)."""
    body = {"model": "m", "max_tokens": 50, "thinking": {"type": "enabled", "budget_tokens": 9},
            "messages": [{"role": "user", "content": "call:search"}],
            "tools": [{"name": "search", "input_schema": {"type": "object", "properties": {
                "q": {"type": "string"}}}}]}  # fmt: skip
    parsed = fake.parse(body)
    message = fake.compose(parsed, length=5, tool_calls_on=False)
    whole = MESSAGES.decode_body(
        json.dumps(fake.message_body("id", parsed, message, with_usage=True)).encode()
    )
    frames = fake.stream_frames("id", parsed, message, with_usage=True)
    decoder = MESSAGES.stream_decoder()
    raw = frames.head + b"".join(frames.tokens) + frames.tail
    views = [decoder.feed(e + b"\n\n") for e in raw.split(b"\n\n") if e]
    calls = [c for v in views for c in v.calls]
    assert whole is not None and [c.arguments for c in calls] == [
        c.arguments for c in whole.tool_calls
    ]
    assert views[-1].done and [v.usage for v in views if v.usage][-1] == whole.usage
    # one content-bearing event per output token: each delta, and the start that names the tool
    assert sum(v.content for v in views) == message.output_tokens
