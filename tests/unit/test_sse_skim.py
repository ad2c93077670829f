"""The dialects' ``skim``: a chunk it accepts is exactly one plain event, and its view (and the
decoder's state after it) is what ``feed`` gives; anything else -- usage, tool calls, reasons to
stop, errors, markers hidden in escaped strings, duplicate keys, cut or glued events, bytes
that are not UTF-8 -- is left to the full decode (None)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest

from holdfast.dialects import NO_EVENT, EventView, StreamDecoder
from holdfast.dialects.anthropic_answers import MessagesStream
from holdfast.dialects.openai_chat import ChatStream
from holdfast.dialects.openai_responses import ResponsesStream
from holdfast.dialects.sse import skim_member


def compact(payload: object, name: str | None = None) -> bytes:
    head = f"event: {name}\n".encode() if name else b""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return head + b"data: " + text.encode() + b"\n\n"


# -- OpenAI chat ----------------------------------------------------------------------------

BASE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
FIRST = compact(BASE | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})


def chunk(delta: object, **more: object) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
    return compact(BASE | {"choices": [choice]} | more)


def chat() -> ChatStream:
    decoder = ChatStream()
    decoder.feed(FIRST)  # the model and id are reported: later chunks may be skimmed
    return decoder


def agree(make: Callable[[], StreamDecoder], event: bytes) -> EventView | None:
    """The skim of ``event``, checked against ``feed`` on a twin decoder (view and state)."""
    skimmer, decoder = make(), make()
    skimmed = skimmer.skim(event)
    fed = decoder.feed(event)
    if skimmed is not None:
        assert skimmed == fed
        assert skimmer.open_calls == decoder.open_calls
        # the state both leave behind reads the rest of a stream alike (anthropic's estimate)
        assert skimmer.finish() == decoder.finish()
    return skimmed


@pytest.mark.parametrize(
    ("event", "text"),
    [
        (chunk({"content": "tok "}), "tok "),
        (chunk({"content": "héllo ☃ 🙂"}), "héllo ☃ 🙂"),  # raw UTF-8, as OpenAI writes it
        (chunk({"role": "assistant", "content": "a"}), "a"),
        (chunk({"content": "a"}, usage=None), "a"),  # include_usage: null on every chunk
        (chunk({"content": "a"}, obfuscation="x1", service_tier="default"), "a"),
        (chunk({"content": "usage: {prompt_tokens} error"}), "usage: {prompt_tokens} error"),
        (chunk({"content": "x" * 1_000_000}), "x" * 1_000_000),  # a huge event, one match
        (b'data:{"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n', "a"),
        # Python's json module: one space after each colon and comma
        (
            b'data: {"id": "c", "choices": [{"index": 0, "delta": {"content": "a"}, '
            b'"logprobs": null, "finish_reason": null}], "usage": null}\n\n',
            "a",
        ),
    ],
)
def test_chat_skims_plain_text_deltas_as_feed_reads_them(event: bytes, text: str) -> None:
    view = agree(chat, event)
    assert view is not None and view.text == text and view.content == 1


def test_chat_empty_content_is_no_event() -> None:
    assert agree(chat, chunk({"content": ""})) is NO_EVENT


def test_chat_first_chunk_is_always_decoded() -> None:
    assert ChatStream().skim(chunk({"content": "a"})) is None  # it reports the model and id


@pytest.mark.parametrize(
    "event",
    [
        # what observers read more from
        chunk({"content": "a"}, usage={"prompt_tokens": 1, "completion_tokens": 2}),
        compact(BASE | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
        chunk({"content": "a", "refusal": "no"}),
        chunk({"content": None, "reasoning_content": "hm"}),
        compact({"error": None} | BASE | {"choices": [{"index": 0, "delta": {"content": "a"}}]}),
        chunk({"content": "a"}, error={"message": "x"}),
        compact(BASE | {"choices": [{"index": 1, "delta": {"content": "a"}}]}),  # not choice 0
        compact(
            BASE | {"choices": [{"index": 0, "delta": {"content": "a"}}, {"index": 1, "delta": {}}]}
        ),
        # a duplicate key overrides what the pattern saw (a JSON parser keeps the last one)
        chunk({"content": "a"})[:-3] + b',"choices":null}\n\n',
        # markers inside escaped strings: the skim leaves every escape to the parser
        chunk({"content": '"usage":{"prompt_tokens":9}'}),
        chunk({"content": 'x","finish_reason":"stop'}),
        chunk({"content": "line\nbreak"}),
        chunk({"content": "a"}, note="\\u0075sage"),
        b'data: {"choices":[{"index":0,"delta":{"\\u0063ontent":"a"}}],"\\u0075sage":{}}\n\n',
        # not one whole event
        chunk({"content": "a"}) + chunk({"content": "b"}),
        chunk({"content": "a"})[:-1],
        chunk({"content": "a"}).replace(b"\n\n", b"\r\n\r\n"),
        b": keep-alive\n\n" + chunk({"content": "a"}),
        # not JSON a parser takes
        chunk({"content": "a"}).replace(b'"a"', b'"\xff"'),  # not UTF-8
        chunk({"content": "a"}).replace(b'"a"', b'"\xed\xa0\x80"'),  # a lone surrogate
        chunk({"content": "a"}).replace(b'"a"', b'"a\x01"'),  # a raw control character
        chunk({"content": "a"}).replace(b'"created":1', b'"created":0123'),
        chunk({"content": "a"}).replace(b'"created":1', b'"created":1e999'),
        chunk({"content": "a"}).replace(b"}]}", b"}]}}"),
        chunk({"content": "a"}).replace(b'"content":', b'"content":  '),  # two spaces
        chunk({"content": "a"}).replace(b'"content":', b'"content" :'),
    ],
)
def test_chat_leaves_everything_else_to_the_full_decode(event: bytes) -> None:
    assert chat().skim(event) is None


@pytest.mark.parametrize("cut", range(1, len(chunk({"content": "tok"}))))
def test_chat_no_prefix_of_an_event_is_skimmed(cut: int) -> None:
    event = chunk({"content": "tok"})
    assert chat().skim(event[:cut]) is None
    assert chat().skim(event[cut:]) is None


def test_members_a_decoder_reads_are_never_scalars_of_the_pattern() -> None:
    member = re.compile(skim_member("error", "choices"))
    assert member.fullmatch(b'"usage":null')
    assert member.fullmatch(b'"errors":1')
    assert not member.fullmatch(b'"error":null')
    assert not member.fullmatch(b'"choices":[]')
    assert not member.fullmatch(b'"usage":{}')  # objects are never scalars
    assert member.fullmatch(b'"n":-0')  # valid JSON
    assert not member.fullmatch(b'"n":01')  # not JSON: a parser refuses it
    assert not member.fullmatch(b'"n":-')
    assert not member.fullmatch(b'"n":1.5')  # a float goes to the parser


# -- Anthropic Messages -----------------------------------------------------------------------

START = compact(
    {"type": "message_start", "message": {"id": "msg_1", "model": "claude", "usage": {
        "input_tokens": 12, "output_tokens": 1}}},
    "message_start",
)  # fmt: skip


def text_delta(text: str, name: str | None = "content_block_delta", **more: object) -> bytes:
    payload = {"type": "content_block_delta", "index": 0} | more
    return compact(payload | {"delta": {"type": "text_delta", "text": text}}, name)


def messages() -> MessagesStream:
    decoder = MessagesStream()
    decoder.feed(START)
    return decoder


@pytest.mark.parametrize(
    "event",
    [text_delta("Hello"), text_delta("wörld", None), text_delta("x" * 500_000), text_delta("")],
)
def test_anthropic_skims_text_deltas_with_the_running_estimate(event: bytes) -> None:
    view = agree(messages, event)
    assert view is not None and view.content == 1 and view.usage is not None


def test_anthropic_estimate_grows_alike_over_a_skimmed_stream() -> None:
    skimmer, decoder = messages(), messages()
    for _ in range(40):
        assert skimmer.skim(text_delta("abcdef")) == decoder.feed(text_delta("abcdef"))
    # a stream the agent cuts before message_delta is charged on this estimate
    end = compact({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {}})
    last = skimmer.feed(end)
    assert last == decoder.feed(end)
    assert last.usage is not None and last.usage.completion == 60  # 240 characters / 4


@pytest.mark.parametrize(
    "event",
    [
        compact({"type": "content_block_delta", "index": 0, "delta": {
            "type": "input_json_delta", "partial_json": "{}"}}),
        compact({"type": "content_block_delta", "index": 0, "delta": {
            "type": "thinking_delta", "thinking": "hm"}}),
        text_delta("a")[:-3] + b',"type":"message_stop"}\n\n',  # a duplicate type wins
        text_delta('say "hi"'),
        text_delta("a") + text_delta("b"),
        text_delta("a").replace(b"\n", b"\r\n"),
        compact({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}),
    ],
)  # fmt: skip
def test_anthropic_leaves_everything_else_to_the_full_decode(event: bytes) -> None:
    assert messages().skim(event) is None


def test_anthropic_before_message_start_nothing_is_skimmed() -> None:
    # the first event decides whether the stream is a Messages stream at all (foreign)
    assert MessagesStream().skim(text_delta("a")) is None


# -- OpenAI Responses -------------------------------------------------------------------------


def output_delta(text: str, **more: object) -> bytes:
    payload = {"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0}
    return compact(
        payload | {"content_index": 0, "delta": text, "logprobs": [], "sequence_number": 4} | more,
        "response.output_text.delta",
    )


@pytest.mark.parametrize("text", ["Hi", "", "☃" * 1000])
def test_responses_skims_output_text_deltas(text: str) -> None:
    view = agree(ResponsesStream, output_delta(text))
    assert view is not None and view.text == text and view.content == 1


@pytest.mark.parametrize(
    "event",
    [
        output_delta("a", type="response.completed"),  # a duplicate type wins
        output_delta("a")[:-3] + b',"delta":{"x":1}}\n\n',
        compact({"type": "response.refusal.delta", "delta": "no"}),
        compact({"type": "response.function_call_arguments.delta", "delta": "{"}),
        output_delta("tab\there"),
    ],
)
def test_responses_leaves_everything_else_to_the_full_decode(event: bytes) -> None:
    assert ResponsesStream().skim(event) is None
