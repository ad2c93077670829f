"""The translation table of docs/dialects/translation.md, one case per row (a row's id is its
case's key, and the page and the cases are checked against each other), plus the breakage other
gateways shipped that the rows name. Streams are read back with the client libraries' own
accumulators. Pure: no event loop."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from holdfast.translate import BY_NAME, BadAnswer, Translation, Untranslatable
from holdfast.translate.messages import event as a_event
from tests.unit.translation_cases import (
    C2M,
    C_DONE,
    M2C,
    R2C,
    R2M,
    ROWS,
    a_stream,
    a_text,
    a_tool,
    answer,
    anthropic_final,
    anthropic_message,
    c_chunk,
    c_stream,
    c_usage,
    chat_body,
    chat_completion,
    chat_final,
    error,
    messages_body,
    out,
    refused,
    responses_body,
    responses_final,
    row,
    sse_objects,
    translated,
)

DOC = Path(__file__).parents[2] / "docs" / "dialects" / "translation.md"
PNG = "iVBORw0KGgo="
CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


# == OpenAI chat completions -> Anthropic Messages ============================================


@row("c2m.model")
def _() -> None:
    assert out(C2M, chat_body(model="claude-sonnet"))["model"] == "claude-sonnet"


@row("c2m.system")
def _() -> None:
    one = chat_body(
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    )
    assert out(C2M, one)["system"] == "be brief"
    two = chat_body(
        messages=[
            {"role": "system", "content": "a"},
            {"role": "developer", "content": [{"type": "text", "text": "b"}]},
            {"role": "user", "content": "hi"},
        ]
    )
    sent = out(C2M, two)
    assert sent["system"] == [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert [m["role"] for m in sent["messages"]] == ["user"]


@row("c2m.system_later")
def _() -> None:
    body = chat_body(
        messages=[{"role": "user", "content": "hi"}, {"role": "system", "content": "later"}]
    )
    assert refused(C2M, body).param == "messages[1]"


@row("c2m.user_text")
def _() -> None:
    body = chat_body(
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ]
    )
    assert out(C2M, body)["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]


@row("c2m.user_image")
def _() -> None:
    parts = [
        {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"},
        },
        {"type": "image_url", "image_url": {"url": "https://x.example/a.png"}},
    ]
    blocks = out(C2M, chat_body(messages=[{"role": "user", "content": parts}]))["messages"][0]
    assert blocks["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://x.example/a.png"}},
    ]


@row("c2m.user_other_parts")
def _() -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}}
    body = chat_body(messages=[{"role": "user", "content": [audio]}])
    assert refused(C2M, body).param == "messages[0].content[0]"
    file = {"type": "file", "file": {"file_id": "f1"}}
    assert refused(C2M, chat_body(messages=[{"role": "user", "content": [file]}]))


@row("c2m.assistant")
def _() -> None:
    body = chat_body(
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "let me see", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"},
        ]
    )
    assistant = out(C2M, body)["messages"][1]
    assert assistant == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "let me see"},
            {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
        ],
    }


@row("c2m.assistant_bad_arguments")
def _() -> None:
    bad = {**CALL, "function": {"name": "f", "arguments": "[1, 2]"}}
    body = chat_body(
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [bad]},
        ]
    )
    assert refused(C2M, body).param == "messages[1]"


@row("c2m.tool")
def _() -> None:
    second = {**CALL, "id": "call_2"}
    body = chat_body(
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": None, "tool_calls": [CALL, second]},
            {"role": "tool", "tool_call_id": "call_1", "content": "one"},
            {
                "role": "tool",
                "tool_call_id": "call_2",
                "content": [{"type": "text", "text": "two"}],
            },
            {"role": "user", "content": "and?"},
        ]
    )
    messages = out(C2M, body)["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[2]["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": "call_1",
            "content": [{"type": "text", "text": "one"}],
        },
        {
            "type": "tool_result",
            "tool_use_id": "call_2",
            "content": [{"type": "text", "text": "two"}],
        },
        {"type": "text", "text": "and?"},
    ]


@row("c2m.message_name")
def _() -> None:
    for extra in ({"name": "bob"}, {"audio": {"id": "a1"}}):
        body = chat_body(messages=[{"role": "user", "content": "hi", **extra}])
        assert refused(C2M, body).param == "messages[0]"
    legacy = chat_body(messages=[{"role": "function", "name": "f", "content": "x"}])
    assert refused(C2M, legacy).param == "messages[0]"


@row("c2m.tools")
def _() -> None:
    tool = {
        "type": "function",
        "function": {
            "name": "f",
            "description": "d",
            "strict": True,
            "parameters": {"type": "object"},
        },
    }
    assert out(C2M, chat_body(tools=[tool]))["tools"] == [
        {"name": "f", "description": "d", "strict": True, "input_schema": {"type": "object"}}
    ]


@row("c2m.builtin_tools")
def _() -> None:
    assert refused(C2M, chat_body(tools=[{"type": "custom", "custom": {"name": "g"}}])).param == (
        "tools"
    )


@row("c2m.tool_choice")
def _() -> None:
    for given, sent in (
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
    ):
        assert out(C2M, chat_body(tools=[TOOL], tool_choice=given))["tool_choice"] == sent


@row("c2m.parallel_tool_calls")
def _() -> None:
    sent = out(C2M, chat_body(tools=[TOOL], parallel_tool_calls=False))
    assert sent["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    assert "tool_choice" not in out(C2M, chat_body(tools=[TOOL], parallel_tool_calls=True))


@row("c2m.max_tokens")
def _() -> None:
    assert out(C2M, chat_body(max_completion_tokens=100))["max_tokens"] == 100
    assert out(C2M, chat_body(max_tokens=50))["max_tokens"] == 50
    assert out(C2M, chat_body())["max_tokens"] == 8192


@row("c2m.temperature")
def _() -> None:
    assert out(C2M, chat_body(temperature=0.5))["temperature"] == 0.5
    assert refused(C2M, chat_body(temperature=1.5)).param == "temperature"


@row("c2m.top_p")
def _() -> None:
    assert out(C2M, chat_body(top_p=0.9))["top_p"] == 0.9


@row("c2m.stop")
def _() -> None:
    assert out(C2M, chat_body(stop="END"))["stop_sequences"] == ["END"]
    assert out(C2M, chat_body(stop=["a", "b"]))["stop_sequences"] == ["a", "b"]


@row("c2m.user")
def _() -> None:
    assert out(C2M, chat_body(user="u-1"))["metadata"] == {"user_id": "u-1"}
    assert out(C2M, chat_body(safety_identifier="s-1"))["metadata"] == {"user_id": "s-1"}


@row("c2m.stream")
def _() -> None:
    sent = out(C2M, chat_body(stream=True, stream_options={"include_usage": True}))
    assert sent["stream"] is True and "stream_options" not in sent
    events = a_stream(a_text(0, "hi"))
    raw, _ = translated(C2M, events, chat_body(stream=True))
    assert not any(isinstance(d, dict) and d.get("usage") for _, d in sse_objects(raw))
    asked = chat_body(stream=True, stream_options={"include_usage": True})
    raw, views = translated(C2M, events, asked)
    final, chunks = chat_final(raw)
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert final.usage is not None and final.usage.total_tokens == 15
    # the usage chunk comes apart, on a view marked as only usage (budgets may drop it)
    assert [v.usage_only for v in views].count(True) == 1


# Features Messages cannot carry: each row's refusals, and the values of them that ask for
# nothing (n=1, logprobs=false...), which are carried.
CHAT_REFUSALS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "c2m.n": [("n", {"n": 2})],
    "c2m.logprobs": [("logprobs", {"logprobs": True}), ("logprobs", {"top_logprobs": 2})],
    "c2m.audio": [("audio", {"modalities": ["text", "audio"]}), ("audio", {"audio": {}})],
    "c2m.response_format": [("response_format", {"response_format": {"type": "json_object"}})],
    "c2m.penalties": [
        ("frequency_penalty", {"presence_penalty": 0.5}),
        ("logit_bias", {"logit_bias": {"50256": -100}}),
    ],
    "c2m.seed": [
        ("seed", {"seed": 7}),
        ("prediction", {"prediction": {"type": "content", "content": "x"}}),
    ],
    "c2m.reasoning": [
        ("reasoning_effort", {"reasoning_effort": "low"}),
        ("verbosity", {"verbosity": "low"}),
    ],
    "c2m.web_search": [("web_search_options", {"web_search_options": {}})],
    "c2m.store": [("store", {"store": True})],
    "c2m.service_tier": [("service_tier", {"service_tier": "flex"})],
}
NO_OPS = chat_body(
    n=1,
    logprobs=False,
    modalities=["text"],
    response_format={"type": "text"},
    frequency_penalty=0,
    store=False,
    service_tier="auto",
)


def _refuses(row_id: str) -> None:
    for field, body in CHAT_REFUSALS[row_id]:
        assert refused(C2M, chat_body(**body)).param == field
    assert out(C2M, NO_OPS)["model"] == "claude-x"


for _row_id in CHAT_REFUSALS:
    row(_row_id)(lambda _r=_row_id: _refuses(_r))  # type: ignore[misc]


def test_metadata_of_stored_completions_is_not_sent() -> None:
    assert "metadata" not in out(C2M, chat_body(metadata={"k": "v"}))


@row("c2m.prompt_cache_key")
def _() -> None:
    assert "prompt_cache_key" not in out(C2M, chat_body(prompt_cache_key="conv-1"))


@row("c2m.unknown_field")
def _() -> None:
    assert refused(C2M, chat_body(brand_new_option=1)).param == "brand_new_option"


@row("c2m.answer_text")
def _() -> None:
    got = answer(
        C2M, anthropic_message([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
    )
    assert got.choices[0].message.content == "ab" and got.choices[0].message.tool_calls is None


@row("c2m.answer_tool_use")
def _() -> None:
    got = answer(
        C2M,
        anthropic_message(
            [
                {"type": "text", "text": "on it"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
                {"type": "tool_use", "id": "toolu_2", "name": "g", "input": {}},
            ],
            "tool_use",
        ),
    )
    calls = got.choices[0].message.tool_calls
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("toolu_1", "f", {"a": 1}),
        ("toolu_2", "g", {}),
    ]
    assert got.choices[0].finish_reason == "tool_calls"


@row("c2m.answer_thinking")
def _() -> None:
    got = answer(
        C2M,
        anthropic_message(
            [
                {"type": "thinking", "thinking": "secret", "signature": "s"},
                {"type": "text", "text": "shown"},
            ]
        ),
    )
    assert got.choices[0].message.content == "shown" and "secret" not in got.model_dump_json()


@row("c2m.answer_stop_reason")
def _() -> None:
    for stop, finish in (
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ):
        got = answer(C2M, anthropic_message([{"type": "text", "text": "x"}], stop))
        assert got.choices[0].finish_reason == finish


@row("c2m.answer_usage")
def _() -> None:
    usage: dict[str, Any] = {
        "input_tokens": 10,
        "cache_read_input_tokens": 30,
        "cache_creation_input_tokens": 5,
        "output_tokens": 7,
        "output_tokens_details": {"thinking_tokens": 3},
    }
    got = answer(C2M, anthropic_message([{"type": "text", "text": "x"}], **usage)).usage
    assert (got.prompt_tokens, got.completion_tokens, got.total_tokens) == (45, 7, 52)
    assert got.prompt_tokens_details.cached_tokens == 30
    assert got.prompt_tokens_details.cache_write_tokens == 5
    assert got.completion_tokens_details.reasoning_tokens == 3


@row("c2m.answer_error")
def _() -> None:
    body = error(
        C2M, 529, {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
    )
    assert body == {
        "error": {
            "message": "busy",
            "type": "upstream_error",
            "code": "overloaded_error",
            "param": None,
        }
    }
    assert error(C2M, 429, {})["error"]["type"] == "insufficient_quota"


def _c2m_stream(body: dict[str, Any] | None = None) -> tuple[Any, list[Any], list[Any]]:
    blocks = [
        *a_text(0, "Hel", "lo"),
        *a_tool(1, "toolu_1", "f", '{"a"', ":1}"),
        *a_tool(2, "toolu_2", "g", "{}"),
    ]
    events = a_stream(blocks, "tool_use", output=9, cache_read_input_tokens=4)
    raw, views = translated(
        C2M, events, body or chat_body(stream=True, stream_options={"include_usage": True})
    )
    final, chunks = chat_final(raw)
    return final, chunks, views


@row("c2m.event_message_start")
def _() -> None:
    _, chunks, _ = _c2m_stream()
    assert chunks[0].id == "msg_1" and chunks[0].model == "claude-x"
    assert chunks[0].choices[0].delta.role == "assistant"


@row("c2m.event_text")
def _() -> None:
    final, chunks, views = _c2m_stream()
    assert [c.choices[0].delta.content for c in chunks[1:3]] == ["Hel", "lo"]
    assert final.choices[0].message.content == "Hello"
    assert "".join(v.text for v in views) == "Hello"  # the filters read the provider's view


@row("c2m.event_tool_use")
def _() -> None:
    # Portkey #1275: a text block, then two tool_use blocks at content indexes 1 and 2
    final, chunks, views = _c2m_stream()
    calls = final.choices[0].message.tool_calls
    assert [(c.id, c.function.name, c.function.arguments) for c in calls] == [
        ("toolu_1", "f", '{"a":1}'),
        ("toolu_2", "g", "{}"),
    ]
    indexes = [tc.index for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert sorted(set(indexes)) == [0, 1]
    firsts = [
        tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or () if tc.id
    ]
    assert [(t.id, t.function.name) for t in firsts] == [("toolu_1", "f"), ("toolu_2", "g")]
    assert [c.name for v in views for c in v.calls] == ["f", "g"]  # contracts see both


@row("c2m.event_thinking")
def _() -> None:
    thinking = [
        a_event(
            "content_block_start",
            {"index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        ),
        a_event(
            "content_block_delta",
            {"index": 0, "delta": {"type": "thinking_delta", "thinking": "secret"}},
        ),
        a_event(
            "content_block_delta",
            {"index": 0, "delta": {"type": "signature_delta", "signature": "sig"}},
        ),
        a_event("content_block_stop", {"index": 0}),
    ]
    raw, _ = translated(C2M, a_stream([*thinking, *a_text(1, "ok")]), chat_body(stream=True))
    assert b"secret" not in raw and b"sig" not in raw
    assert chat_final(raw)[0].choices[0].message.content == "ok"


@row("c2m.event_message_delta")
def _() -> None:
    final, chunks, _ = _c2m_stream()
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    assert final.choices[0].finish_reason == "tool_calls"


@row("c2m.event_message_stop")
def _() -> None:
    # LiteLLM #37264: usage reaches the agent of a translated stream, the provider's count
    final, chunks, views = _c2m_stream()
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (14, 9)
    assert usage.prompt_tokens_details.cached_tokens == 4
    assert final.usage.total_tokens == 23
    # what budgets settle on: the provider's last report
    assert [v.usage for v in views if v.usage is not None][-1].total == 23


@row("c2m.event_ping")
def _() -> None:
    raw, views = translated(C2M, [a_event("ping", {})], chat_body(stream=True))
    assert raw == b"" and views


@row("c2m.event_error")
def _() -> None:
    events = [
        *a_stream(a_text(0, "x"))[:-2],
        a_event("error", {"error": {"type": "overloaded_error", "message": "busy"}}),
    ]
    raw, views = translated(C2M, events, chat_body(stream=True))
    last = sse_objects(raw)[-1][1]
    assert last == {
        "error": {
            "message": "busy",
            "type": "upstream_error",
            "code": "overloaded_error",
            "param": None,
        }
    }
    assert views[-1].error


# == Anthropic Messages -> OpenAI chat completions ============================================


@row("m2c.model")
def _() -> None:
    assert out(M2C, messages_body(model="gpt-4.1"))["model"] == "gpt-4.1"


@row("m2c.system")
def _() -> None:
    assert out(M2C, messages_body(system="be brief"))["messages"][0] == {
        "role": "system",
        "content": "be brief",
    }
    blocks = [
        {"type": "text", "text": "a", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "b"},
    ]
    sent = out(M2C, messages_body(system=blocks))["messages"]
    assert sent[:2] == [{"role": "system", "content": "a"}, {"role": "system", "content": "b"}]
    assert "cache_control" not in json.dumps(sent)


@row("m2c.system_turns")
def _() -> None:
    body = messages_body(
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "reminder"},
            {"role": "user", "content": "go"},
        ]
    )
    assert [m["role"] for m in out(M2C, body)["messages"]] == ["user", "system", "user"]


@row("m2c.text")
def _() -> None:
    body = messages_body(
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ]
    )
    assert out(M2C, body)["messages"] == [{"role": "user", "content": "ab"}]


@row("m2c.image")
def _() -> None:
    blocks = [
        {"type": "text", "text": "what is it?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://x.example/a.png"}},
    ]
    content = out(M2C, messages_body(messages=[{"role": "user", "content": blocks}]))["messages"][0]
    assert content["content"] == [
        {"type": "text", "text": "what is it?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": "https://x.example/a.png"}},
    ]


@row("m2c.document")
def _() -> None:
    doc = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "x"},
    }
    body = messages_body(messages=[{"role": "user", "content": [doc]}])
    assert refused(M2C, body).param == "messages[0].content[0]"
    cited = {"type": "text", "text": "x", "citations": [{"type": "char_location"}]}
    assert refused(M2C, messages_body(messages=[{"role": "assistant", "content": [cited]}]))


@row("m2c.tool_use")
def _() -> None:
    body = messages_body(
        messages=[
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
            },
        ]
    )
    assert out(M2C, body)["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}
        ],
    }


@row("m2c.tool_result")
def _() -> None:
    uses = [{"type": "tool_use", "id": f"toolu_{i}", "name": "f", "input": {}} for i in (1, 2)]
    results = [
        {"type": "text", "text": "then?"},
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "one"},
        {
            "type": "tool_result",
            "tool_use_id": "toolu_2",
            "is_error": True,
            "content": [{"type": "text", "text": "<tool_use_error>no</tool_use_error>"}],
        },
    ]
    body = messages_body(
        messages=[
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": uses},
            {"role": "user", "content": results},
        ]
    )
    sent = out(M2C, body)["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool", "user"]
    assert sent[2] == {"role": "tool", "tool_call_id": "toolu_1", "content": "one"}
    assert sent[3]["content"] == "<tool_use_error>no</tool_use_error>" and sent[4]["content"] == (
        "then?"
    )


@row("m2c.tool_result_image")
def _() -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": [image]}
    body = messages_body(messages=[{"role": "user", "content": [result]}])
    assert refused(M2C, body).param == "messages[0].content[0]"


@row("m2c.thinking")
def _() -> None:
    turn = {
        "role": "assistant",
        "content": [{"type": "redacted_thinking", "data": "x"}, {"type": "text", "text": "hi"}],
    }
    assert refused(M2C, messages_body(messages=[turn])).param == "messages[0].content[0]"


@row("m2c.server_blocks")
def _() -> None:
    turn = {
        "role": "assistant",
        "content": [
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
        ],
    }
    assert refused(M2C, messages_body(messages=[turn])).param == "messages[0].content[0]"


@row("m2c.tools")
def _() -> None:
    tools = [
        {
            "name": "f",
            "description": "d",
            "input_schema": {"type": "object"},
            "cache_control": {"type": "ephemeral"},
        }
    ]
    assert out(M2C, messages_body(tools=tools))["tools"] == [
        {
            "type": "function",
            "function": {"name": "f", "description": "d", "parameters": {"type": "object"}},
        }
    ]
    # a deferred tool (Claude Code's tool search) is not shown to the model: not sent
    deferred = {"name": "later", "input_schema": {"type": "object"}, "defer_loading": True}
    sent = out(M2C, messages_body(tools=[*tools, deferred]))["tools"]
    assert [t["function"]["name"] for t in sent] == ["f"]
    loaded = {"type": "tool_reference", "tool_name": "later"}
    turns = [
        {"role": "user", "content": "find it"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "search",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": [loaded]}]},
    ]  # fmt: skip
    assert refused(M2C, messages_body(messages=turns)).param == "messages[2].content[0].content[0]"


@row("m2c.server_tools")
def _() -> None:
    tools = [{"type": "web_search_20250305", "name": "web_search"}]
    assert refused(M2C, messages_body(tools=tools)).param == "tools"


@row("m2c.tool_choice")
def _() -> None:
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    for given, sent in (
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "f"}, {"type": "function", "function": {"name": "f"}}),
    ):
        assert out(M2C, messages_body(tools=tools, tool_choice=given))["tool_choice"] == sent


@row("m2c.disable_parallel")
def _() -> None:
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    choice = {"type": "auto", "disable_parallel_tool_use": True}
    assert out(M2C, messages_body(tools=tools, tool_choice=choice))["parallel_tool_calls"] is False


@row("m2c.max_tokens")
def _() -> None:
    assert out(M2C, messages_body(max_tokens=99))["max_tokens"] == 99
    sent = out(M2C, messages_body(max_tokens=99), "https://api.openai.com/v1")
    assert sent["max_completion_tokens"] == 99 and "max_tokens" not in sent


@row("m2c.sampling")
def _() -> None:
    sent = out(M2C, messages_body(temperature=0.2, top_p=0.8))
    assert (sent["temperature"], sent["top_p"]) == (0.2, 0.8)


@row("m2c.top_k")
def _() -> None:
    assert refused(M2C, messages_body(top_k=5)).param == "top_k"


@row("m2c.stop_sequences")
def _() -> None:
    assert out(M2C, messages_body(stop_sequences=["a", "b"]))["stop"] == ["a", "b"]
    assert refused(M2C, messages_body(stop_sequences=list("abcde"))).param == "stop_sequences"


@row("m2c.metadata")
def _() -> None:
    assert out(M2C, messages_body(metadata={"user_id": "u-1"}))["user"] == "u-1"


@row("m2c.stream")
def _() -> None:
    sent = out(M2C, messages_body(stream=True))
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


@row("m2c.thinking_param")
def _() -> None:
    assert refused(M2C, messages_body(thinking={"type": "enabled", "budget_tokens": 1024}))
    assert "thinking" not in out(M2C, messages_body(thinking={"type": "disabled"}))
    hidden = {"type": "adaptive", "display": "omitted"}  # Claude Code's
    sent = out(M2C, messages_body(thinking=hidden))
    assert "thinking" not in sent and "reasoning_effort" not in sent
    for shown in ({"type": "adaptive"}, {"type": "adaptive", "display": "summarized"},
                  {**hidden, "budget_tokens": 1024}):  # fmt: skip
        assert refused(M2C, messages_body(thinking=shown)).param == "thinking"


@row("m2c.provider_run")
def _() -> None:
    for field in ("mcp_servers", "container", "context_management"):
        assert refused(M2C, messages_body(**{field: {}})).param == field
    clearing: dict[str, Any] = {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}
    # Claude Code's edits: clearing thinking, of which a translated conversation has none
    assert "context_management" not in out(M2C, messages_body(context_management=clearing))
    tools = {"edits": [*clearing["edits"], {"type": "clear_tool_uses_20250919"}]}
    edits: dict[str, Any]
    for edits in (tools, {"edits": []}, {**clearing, "other": 1}):
        assert refused(M2C, messages_body(context_management=edits)).param == "context_management"


@row("m2c.output_config")
def _() -> None:
    sent = out(M2C, messages_body(output_config={"effort": "high"}))  # Claude Code's
    assert "output_config" not in sent and "reasoning_effort" not in sent
    for config in ({"effort": "low"}, {"effort": "high", "format": {"type": "json_schema"}}, "x"):
        assert refused(M2C, messages_body(output_config=config)).param == "output_config"


@row("m2c.service_tier")
def _() -> None:
    assert refused(M2C, messages_body(service_tier="standard_only")).param == "service_tier"
    assert "service_tier" not in out(M2C, messages_body(service_tier="auto"))


@row("m2c.beta_header")
def _() -> None:
    # the translation writes a body only; the provider kind forwards no agent header to OpenAI
    from holdfast.providers import PROVIDERS

    agent = {"anthropic-beta": "fine-grained-tool-streaming-2025-05-14"}
    assert "anthropic-beta" not in PROVIDERS["openai"].headers("sk", "", agent)


@row("m2c.unknown_field")
def _() -> None:
    assert refused(M2C, messages_body(output_config={"effort": "low"})).param == "output_config"
    assert refused(M2C, messages_body(brand_new_option=1)).param == "brand_new_option"


@row("m2c.answer_text")
def _() -> None:
    got = answer(M2C, chat_completion({"content": "hello"}))
    assert [(b.type, b.text) for b in got.content] == [("text", "hello")]
    assert got.id == "chatcmpl-1" and got.model == "gpt-x"


@row("m2c.answer_tool_use")
def _() -> None:
    got = answer(M2C, chat_completion({"content": None, "tool_calls": [CALL]}, "tool_calls"))
    (use,) = got.content
    assert use.type == "tool_use" and (use.id, use.name, use.input) == ("call_1", "f", {"a": 1})
    assert got.stop_reason == "tool_use"
    bad = {**CALL, "function": {"name": "f", "arguments": "not json"}}
    translation = Translation(BY_NAME[M2C], messages_body())
    with pytest.raises(Untranslatable):
        translation.answer(json.dumps(chat_completion({"tool_calls": [bad]})).encode())


@row("m2c.answer_refusal")
def _() -> None:
    got = answer(M2C, chat_completion({"content": None, "refusal": "I can't"}, "stop"))
    assert got.content[0].text == "I can't"
    filtered = answer(M2C, chat_completion({"content": "partial"}, "content_filter"))
    assert filtered.stop_reason == "refusal"


@row("m2c.answer_stop_reason")
def _() -> None:
    for finish, stop in (
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ):
        assert answer(M2C, chat_completion({"content": "x"}, finish)).stop_reason == stop


@row("m2c.answer_usage")
def _() -> None:
    usage: dict[str, Any] = {
        "prompt_tokens": 50,
        "completion_tokens": 9,
        "total_tokens": 59,
        "prompt_tokens_details": {"cached_tokens": 30, "cache_write_tokens": 5},
        "completion_tokens_details": {"reasoning_tokens": 4},
    }
    got = answer(M2C, chat_completion({"content": "x"}, **usage)).usage
    assert (got.input_tokens, got.cache_read_input_tokens, got.cache_creation_input_tokens) == (
        15,
        30,
        5,
    )
    assert got.output_tokens == 9 and got.output_tokens_details.thinking_tokens == 4


@row("m2c.answer_error")
def _() -> None:
    provider = {
        "error": {
            "message": "slow down",
            "type": "rate_limit_error",
            "code": "rate_limit_exceeded",
            "param": None,
        }
    }
    assert error(M2C, 429, provider) == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "slow down",
            "code": "rate_limit_exceeded",
        },
    }
    assert error(M2C, 500, b"not json")["error"]["type"] == "api_error"


def _m2c_stream(*deltas: dict[str, Any], **kw: Any) -> tuple[Any, list[str], list[Any]]:
    raw, views = translated(M2C, c_stream(*deltas, **kw), messages_body(stream=True))
    final, kinds = anthropic_final(raw)
    return final, kinds, views


TOOL_DELTAS: tuple[dict[str, Any], ...] = (
    {"content": "let me"},
    {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": "f", "arguments": ""},
            }
        ]
    },
    {"tool_calls": [{"index": 0, "function": {"arguments": '{"a"'}}]},
    {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]},
    {
        "tool_calls": [
            {
                "index": 1,
                "id": "call_2",
                "type": "function",
                "function": {"name": "g", "arguments": "{}"},
            }
        ]
    },
)


@row("m2c.event_first_chunk")
def _() -> None:
    _, kinds, _ = _m2c_stream({"content": "hi"})
    assert kinds[0] == "message_start"


@row("m2c.event_text")
def _() -> None:
    final, kinds, _ = _m2c_stream({"content": "Hel"}, {"content": "lo"})
    assert final.content[0].text == "Hello"
    assert kinds[1:5] == [
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
    ]


@row("m2c.event_tool_calls")
def _() -> None:
    final, kinds, views = _m2c_stream(*TOOL_DELTAS, finish="tool_calls")
    assert [b.type for b in final.content] == ["text", "tool_use", "tool_use"]
    assert [(b.id, b.name, b.input) for b in final.content[1:]] == [
        ("call_1", "f", {"a": 1}),
        ("call_2", "g", {}),
    ]
    assert final.stop_reason == "tool_use"
    # one block at a time: every start is followed by its stop before the next start
    opened = 0
    for kind in kinds:
        opened += {"content_block_start": 1, "content_block_stop": -1}.get(kind, 0)
        assert opened in (0, 1)
    assert [c.name for v in views for c in v.calls] == ["f", "g"]


@row("m2c.event_interleaved")
def _() -> None:
    interleaved = (
        {"tool_calls": [{"index": 0, "id": "call_1", "function": {"name": "f", "arguments": ""}}]},
        {"tool_calls": [{"index": 1, "id": "call_2", "function": {"name": "g", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]},
    )
    raw, _ = translated(
        M2C, c_stream(*interleaved, finish="tool_calls"), messages_body(stream=True)
    )
    events = sse_objects(raw)
    assert events[-1][0] == "error" and events[-1][1]["error"]["code"] == "untranslatable_answer"
    assert [name for name, _ in events].count("error") == 1


@row("m2c.event_finish")
def _() -> None:
    final, kinds, _ = _m2c_stream({"content": "x"}, finish="length")
    assert final.stop_reason == "max_tokens"
    assert kinds[-2:] == ["message_delta", "message_stop"]


@row("m2c.event_usage")
def _() -> None:
    # on a chunk of its own (OpenAI), or on the finish chunk (Portkey #1259: Mistral's way)
    final, _, views = _m2c_stream({"content": "x"}, usage=c_usage(40, 6, cached=30))
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens) == (10, 30)
    assert final.usage.output_tokens == 6
    usage = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    on_finish = [
        c_chunk({"role": "assistant", "content": "hi"}),
        c_chunk({}, "stop", usage=usage),
        C_DONE,
    ]
    raw, views = translated(M2C, on_finish, messages_body(stream=True))
    final, _ = anthropic_final(raw)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (12, 3)
    assert [v.usage for v in views if v.usage][-1].total == 15


@row("m2c.event_done")
def _() -> None:
    _, kinds, views = _m2c_stream({"content": "x"})
    assert kinds[-1] == "message_stop" and views[-1].done


@row("m2c.event_error")
def _() -> None:
    events = [
        c_chunk({"role": "assistant", "content": "x"}),
        b'data: {"error": {"message": "boom", "type": "server_error", "code": null}}\n\n',
    ]
    raw, views = translated(M2C, events, messages_body(stream=True))
    name, data = sse_objects(raw)[-1]
    assert name == "error" and data["error"]["message"] == "boom" and views[-1].error


# == OpenAI Responses -> OpenAI chat completions ==============================================


@row("r2c.instructions")
def _() -> None:
    body = responses_body(
        instructions="be brief",
        input=[{"role": "developer", "content": "and kind"}, {"role": "user", "content": "hi"}],
    )
    assert [m["content"] for m in out(R2C, body)["messages"]] == ["be brief", "and kind", "hi"]


@row("r2c.input")
def _() -> None:
    assert out(R2C, responses_body(input="hi"))["messages"] == [{"role": "user", "content": "hi"}]
    items = [
        {
            "type": "message",
            "role": "user",
            "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": "https://x.example/a.png", "detail": "auto"},
            ],
        },
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "a cat", "annotations": []}],
        },
    ]
    sent = out(R2C, responses_body(input=items))["messages"]
    assert sent[0]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "https://x.example/a.png", "detail": "auto"},
    }
    assert sent[1] == {"role": "assistant", "content": "a cat"}


@row("r2c.input_file")
def _() -> None:
    part = {"type": "input_file", "file_id": "file-1"}
    assert refused(R2C, responses_body(input=[{"role": "user", "content": [part]}])).param == (
        "input[0].content[0]"
    )
    by_id = {"type": "input_image", "file_id": "file-1"}
    assert refused(R2C, responses_body(input=[{"role": "user", "content": [by_id]}]))


FUNCTION_ITEMS = [
    {"role": "user", "content": "weather?"},
    {"type": "function_call", "call_id": "call_1", "name": "f", "arguments": '{"a":1}'},
    {"type": "function_call", "call_id": "call_2", "name": "g", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
    {"type": "function_call_output", "call_id": "call_2", "output": "noon"},
]


@row("r2c.function_call")
def _() -> None:
    sent = out(R2C, responses_body(input=FUNCTION_ITEMS))["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "tool"]
    assert [c["id"] for c in sent[1]["tool_calls"]] == ["call_1", "call_2"]


@row("r2c.function_call_output")
def _() -> None:
    sent = out(R2C, responses_body(input=FUNCTION_ITEMS))["messages"]
    assert sent[2] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}


@row("r2c.reasoning_items")
def _() -> None:
    # LiteLLM #40364: another provider's encrypted reasoning never reaches this one
    items = [
        {"role": "user", "content": "hi"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA"},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "ok"},
    ]
    for pair in (R2C, R2M):
        sent = json.dumps(out(pair, responses_body(input=items)))
        assert "gAAAA" not in sent and "rs_1" not in sent and "reasoning" not in sent


@row("r2c.other_items")
def _() -> None:
    for item in (
        {"type": "item_reference", "id": "msg_1"},
        {"type": "web_search_call", "id": "ws_1", "status": "completed"},
    ):
        assert refused(R2C, responses_body(input=[item])).param == "input[0]"


@row("r2c.tools")
def _() -> None:
    tool = {
        "type": "function",
        "name": "f",
        "description": "d",
        "parameters": {"type": "object"},
        "strict": False,
    }
    assert out(R2C, responses_body(tools=[tool]))["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "f",
                "parameters": {"type": "object"},
                "description": "d",
                "strict": False,
            },
        }
    ]


@row("r2c.builtin_tools")
def _() -> None:
    assert refused(R2C, responses_body(tools=[{"type": "web_search"}])).param == "tools"


@row("r2c.tool_choice")
def _() -> None:
    tools = [{"type": "function", "name": "f", "parameters": {}}]
    sent = out(
        R2C,
        responses_body(
            tools=tools, parallel_tool_calls=False, tool_choice={"type": "function", "name": "f"}
        ),
    )
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert sent["parallel_tool_calls"] is False
    assert refused(R2C, responses_body(tools=tools, tool_choice={"type": "allowed_tools"}))


@row("r2c.max_output_tokens")
def _() -> None:
    assert out(R2C, responses_body(max_output_tokens=77))["max_tokens"] == 77
    openai = out(R2C, responses_body(max_output_tokens=77), "https://api.openai.com/v1")
    assert openai["max_completion_tokens"] == 77


@row("r2c.sampling")
def _() -> None:
    sent = out(R2C, responses_body(temperature=1.5, top_p=0.5, safety_identifier="s-1"))
    assert (sent["temperature"], sent["top_p"], sent["user"]) == (1.5, 0.5, "s-1")


@row("r2c.reasoning")
def _() -> None:
    sent = out(R2C, responses_body(reasoning={"effort": "high", "summary": "auto"}))
    assert sent["reasoning_effort"] == "high"
    assert refused(R2C, responses_body(reasoning={"summary": "detailed"})).param == "reasoning"


@row("r2c.text_format")
def _() -> None:
    fmt = {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}
    sent = out(R2C, responses_body(text={"format": fmt}))
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True},
    }
    assert refused(R2C, responses_body(text={"verbosity": "low"})).param == "text"
    assert "response_format" not in out(R2C, responses_body(text={"verbosity": "medium"}))


@row("r2c.state")
def _() -> None:
    for field, value in (
        ("store", True),
        ("previous_response_id", "resp_1"),
        ("conversation", "conv_1"),
        ("background", True),
    ):
        param = refused(R2C, responses_body(**{field: value})).param
        assert param == ("previous_response_id" if field == "conversation" else field)
    assert out(R2C, responses_body(store=False))["messages"]
    got = answer(R2C, chat_completion({"content": "x"}), responses_body())
    assert got.to_dict()["store"] is False  # store left out: served statelessly, and said so


@row("r2c.limits")
def _() -> None:
    for body, param in (
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"include": ["message.output_text.logprobs"]}, "top_logprobs"),
        ({"max_tool_calls": 3}, "max_tool_calls"),
        ({"truncation": "auto"}, "truncation"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ):
        assert refused(R2C, responses_body(**body)).param == param


@row("r2c.unsent")
def _() -> None:
    body = responses_body(
        prompt_cache_key="k",
        metadata={"a": "b"},
        client_metadata={"x-codex-installation-id": "i"},
        include=["reasoning.encrypted_content"],
        stream_options={"include_obfuscation": False},
    )
    sent = out(R2C, body)
    for field in ("prompt_cache_key", "metadata", "client_metadata", "include"):
        assert field not in sent
    echoed = answer(R2C, chat_completion({"content": "x"}), body)
    assert echoed.metadata == {"a": "b"}


@row("r2c.unknown_field")
def _() -> None:
    assert refused(R2C, responses_body(context_management=[{}])).param == "context_management"


@row("r2c.answer")
def _() -> None:
    got = answer(R2C, chat_completion({"content": "on it", "tool_calls": [CALL]}, "tool_calls"))
    assert [o.type for o in got.output] == ["message", "function_call"]
    assert got.output_text == "on it" and got.output[1].call_id == "call_1"
    refusal = answer(R2C, chat_completion({"content": None, "refusal": "no"}))
    assert refusal.output[0].content[0].type == "refusal"


@row("r2c.answer_status")
def _() -> None:
    for finish, status, reason in (
        ("stop", "completed", None),
        ("length", "incomplete", "max_output_tokens"),
        ("content_filter", "incomplete", "content_filter"),
    ):
        got = answer(R2C, chat_completion({"content": "x"}, finish))
        assert got.status == status
        assert (got.incomplete_details.reason if got.incomplete_details else None) == reason


@row("r2c.answer_usage")
def _() -> None:
    usage: dict[str, Any] = {
        "prompt_tokens": 50,
        "completion_tokens": 9,
        "total_tokens": 59,
        "prompt_tokens_details": {"cached_tokens": 30},
        "completion_tokens_details": {"reasoning_tokens": 4},
    }
    got = answer(R2C, chat_completion({"content": "x"}, **usage)).usage
    assert (got.input_tokens, got.output_tokens, got.total_tokens) == (50, 9, 59)
    assert got.input_tokens_details.cached_tokens == 30
    assert got.output_tokens_details.reasoning_tokens == 4


@row("r2c.answer_error")
def _() -> None:
    provider = {"error": {"message": "bad", "type": "invalid_request_error", "code": "x"}}
    assert error(R2C, 400, provider)["error"]["message"] == "bad"


def _r2c_stream(*deltas: dict[str, Any], **kw: Any) -> tuple[Any, list[str]]:
    raw, _ = translated(R2C, c_stream(*deltas, **kw), responses_body(stream=True))
    return responses_final(raw)


@row("r2c.event_created")
def _() -> None:
    final, kinds = _r2c_stream({"content": "x"})
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert final.id == "resp_chatcmpl-1" and final.to_dict()["store"] is False


@row("r2c.event_text")
def _() -> None:
    # LiteLLM #29254: the whole event sequence a strict client (Codex CLI) parses
    final, kinds = _r2c_stream({"content": "Hel"}, {"content": "lo"})
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert final.output_text == "Hello"


@row("r2c.event_function_call")
def _() -> None:
    final, kinds = _r2c_stream(*TOOL_DELTAS, finish="tool_calls")
    calls = [o for o in final.output if o.type == "function_call"]
    assert [(c.call_id, c.name, c.arguments) for c in calls] == [
        ("call_1", "f", '{"a":1}'),
        ("call_2", "g", "{}"),
    ]
    assert kinds.count("response.function_call_arguments.done") == 2
    assert kinds.count("response.output_item.done") == 3


@row("r2c.event_completed")
def _() -> None:
    final, kinds = _r2c_stream({"content": "x"}, usage=c_usage(20, 3, cached=8))
    assert kinds[-1] == "response.completed" and final.status == "completed"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (20, 3)
    assert final.usage.input_tokens_details.cached_tokens == 8
    cut, kinds = _r2c_stream({"content": "x"}, finish="length")
    assert kinds[-1] == "response.incomplete" and cut.status == "incomplete"


@row("r2c.event_error")
def _() -> None:
    events = [
        c_chunk({"role": "assistant", "content": "x"}),
        b'data: {"error": {"message": "boom", "type": "server_error"}}\n\n',
    ]
    raw, _ = translated(R2C, events, responses_body(stream=True))
    _, kinds = responses_final(raw)
    assert kinds[-1] == "error" and sse_objects(raw)[-1][1]["message"] == "boom"


# == OpenAI Responses -> Anthropic Messages ===================================================


@row("r2m.request")
def _() -> None:
    tools = [{"type": "function", "name": "f", "parameters": {"type": "object"}}]
    sent = out(R2M, responses_body(instructions="be brief", input=FUNCTION_ITEMS, tools=tools))
    assert sent["system"] == "be brief" and sent["max_tokens"] == 8192
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert [b["type"] for b in sent["messages"][2]["content"]] == ["tool_result", "tool_result"]
    assert sent["tools"] == [{"name": "f", "input_schema": {"type": "object"}}]


@row("r2m.reasoning")
def _() -> None:
    assert refused(R2M, responses_body(reasoning={"effort": "medium"})).param == "reasoning"
    assert out(R2M, responses_body(reasoning={"effort": "none"}))


@row("r2m.text_format")
def _() -> None:
    assert refused(R2M, responses_body(text={"format": {"type": "json_object"}})).param == "text"
    assert refused(R2M, responses_body(text={"verbosity": "high"})).param == "text"


@row("r2m.temperature")
def _() -> None:
    assert refused(R2M, responses_body(temperature=1.2)).param == "temperature"
    assert out(R2M, responses_body(temperature=0.7))["temperature"] == 0.7


@row("r2m.reasoning_items")
def _() -> None:
    items = [
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA"},
        {"role": "user", "content": "hi"},
    ]
    assert "gAAAA" not in json.dumps(out(R2M, responses_body(input=items)))


@row("r2m.state")
def _() -> None:
    assert refused(R2M, responses_body(store=True)).param == "store"
    assert refused(R2M, responses_body(previous_response_id="resp_1")).param == (
        "previous_response_id"
    )


@row("r2m.answer")
def _() -> None:
    got = answer(
        R2M,
        anthropic_message(
            [
                {"type": "thinking", "thinking": "secret", "signature": "s"},
                {"type": "text", "text": "on it"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}},
            ],
            "tool_use",
        ),
    )
    assert [o.type for o in got.output] == ["message", "function_call"]
    assert got.output[1].arguments == '{"a":1}'
    assert "secret" not in got.model_dump_json()


@row("r2m.answer_usage")
def _() -> None:
    got = answer(
        R2M,
        anthropic_message(
            [{"type": "text", "text": "x"}],
            input_tokens=10,
            cache_read_input_tokens=30,
            cache_creation_input_tokens=5,
        ),
    ).usage
    assert got.input_tokens == 45 and got.input_tokens_details.cached_tokens == 30
    assert got.input_tokens_details.cache_write_tokens == 5


@row("r2m.event_stream")
def _() -> None:
    blocks = [*a_text(0, "Hel", "lo"), *a_tool(1, "toolu_1", "f", '{"a"', ":1}")]
    raw, views = translated(R2M, a_stream(blocks, "tool_use"), responses_body(stream=True))
    final, kinds = responses_final(raw)
    assert final.output_text == "Hello" and final.output[1].call_id == "toolu_1"
    assert kinds[-1] == "response.completed" and final.usage.input_tokens == 10
    assert [c.name for v in views for c in v.calls] == ["f"]


@row("r2m.event_interleaved")
def _() -> None:
    from holdfast.translate.neutral import CallDelta, CallStarted, Opened
    from holdfast.translate.responses import StreamWriter

    writer = StreamWriter(responses_body())
    out_ = b""
    for e in (
        Opened("m", "x"),
        CallStarted(0, "c0", "f"),
        CallStarted(1, "c1", "g"),
        CallDelta(0, "{}"),
        CallDelta(1, "{}"),
    ):
        out_ += b"".join(data for data, _ in writer.write(e))
    events = sse_objects(out_)
    assert events[-1][0] == "error" and events[-1][1]["code"] == "untranslatable_answer"
    assert [name for name, _ in events].count("error") == 1


# == beyond the rows ==========================================================================


def test_a_provider_answer_of_another_api_is_a_bad_answer() -> None:
    translation = Translation(BY_NAME[C2M], chat_body())
    with pytest.raises(BadAnswer):
        translation.answer(json.dumps(chat_completion({"content": "x"})).encode())
    with pytest.raises(BadAnswer):
        Translation(BY_NAME[M2C], messages_body()).answer(b"<html>")


def test_a_foreign_stream_is_reported_on_the_first_event() -> None:
    raw, views = translated(C2M, [c_chunk({"content": "x"})], chat_body(stream=True))
    assert raw == b"" and views[0].foreign


def test_a_stream_cut_short_translates_what_arrived() -> None:
    events = a_stream(a_text(0, "Hel", "lo"))[:5]  # no message_delta, no message_stop
    raw, views = translated(C2M, events, chat_body(stream=True))
    assert b"[DONE]" not in raw and b'"Hel"' in raw
    assert views[-1].usage is not None  # the decoder's estimate, for budgets


def test_translated_event_view_bytes_pairs_keep_order_for_the_chain() -> None:
    # a provider event that yields an agent event, a usage-only chunk and [DONE] keeps them in
    # order, the provider's view first
    asked = chat_body(stream=True, stream_options={"include_usage": True})
    translation = Translation(BY_NAME[C2M], asked).stream()
    for event in a_stream(a_text(0, "x"))[:-1]:
        translation.feed(event)
    pairs = translation.feed(a_event("message_stop", {}))
    assert [v.usage_only for v, _ in pairs] == [False, True, False]
    assert pairs[0][0].done and pairs[0][1] == b"" and pairs[2][1] == C_DONE
    assert b'"usage"' in pairs[1][1]


# == the table, as documented: last, once every case above is registered =====================


def test_every_row_of_the_documented_table_has_its_case() -> None:
    documented = set(re.findall(r"^\| `([a-z0-9]+\.[a-z0-9_]+)` \|", DOC.read_text(), re.M))
    assert len(documented) > 100
    assert sorted(documented - set(ROWS)) == [], "rows without a case"
    assert sorted(set(ROWS) - documented) == [], "cases without a row"


@pytest.mark.parametrize("row_id", sorted(ROWS))
def test_row(row_id: str) -> None:
    ROWS[row_id]()
