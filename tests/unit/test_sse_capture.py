"""SseCapture: the Answer of a streamed completion, whatever the chunk boundaries."""

from __future__ import annotations

import json

from holdfast.compare import Answer
from sidecar.shadow.sse_capture import SseCapture


def frame(payload: object, newline: bytes = b"\n") -> bytes:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return b"data: " + data + newline + newline


def delta(d: dict[str, object], index: int = 0) -> bytes:
    return frame({"id": "x", "choices": [{"index": index, "delta": d, "finish_reason": None}]})


TEXT_STREAM = b"".join(
    [
        b": keep-alive comment\n\n",
        delta({"role": "assistant", "content": ""}),
        delta({"content": "[m] h\u00e9llo"}),
        delta({"content": " w\u00f6rld"}, index=1),  # another choice: ignored
        delta({"content": " \u2603 snow"}),
        frame({"id": "x", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}}),
        frame(b"[DONE]"),
    ]
)
TOOL_STREAM = b"".join(
    [
        delta(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "c0",
                        "type": "function",
                        "function": {"name": "look", "arguments": ""},
                    }
                ]
            }
        ),
        delta(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "pi", "arguments": "{}"},
                    }
                ]
            }
        ),
        delta({"tool_calls": [{"index": 0, "function": {"arguments": '{"b": 1,'}}]}),
        delta({"tool_calls": [{"index": 1, "function": {"name": "ng"}}]}),
        delta({"tool_calls": [{"index": 0, "function": {"arguments": ' "a": 2}'}}]}),
        frame(b"[DONE]", newline=b"\r\n"),
    ]
)


def capture(*chunks: bytes) -> SseCapture:
    c = SseCapture()
    for chunk in chunks:
        c.feed(chunk)
    return c


def test_text_stream_gives_content_of_first_choice_and_usage() -> None:
    c = capture(TEXT_STREAM)
    assert c.answer() == Answer("[m] h\u00e9llo \u2603 snow", (), 9, 3)
    assert c.done and not c.truncated and not c.failed


def test_every_split_point_gives_the_same_answer() -> None:
    for stream in (TEXT_STREAM, TOOL_STREAM, TEXT_STREAM.replace(b"\n", b"\r\n")):
        whole = capture(stream).answer()
        for cut in range(len(stream) + 1):
            assert capture(stream[:cut], stream[cut:]).answer() == whole, cut
        assert capture(*(stream[i : i + 1] for i in range(len(stream)))).answer() == whole


def test_tool_call_fragments_are_joined_by_index_and_canonicalised() -> None:
    answer = capture(TOOL_STREAM).answer()
    assert answer.tool_calls == (("look", '{"a":2,"b":1}'), ("ping", "{}"))
    assert answer.text == ""


def test_text_beyond_the_cap_is_dropped_and_marked() -> None:
    c = SseCapture(max_text=10)
    c.feed(delta({"content": "12345"}) + delta({"content": "6789abc"}) + delta({"content": "d"}))
    assert c.truncated
    assert c.answer().text == "12345"  # nothing after the first piece that did not fit


def test_an_over_long_line_is_skipped_without_growing_memory() -> None:
    c = SseCapture(max_line=100)
    c.feed(b"data: " + b"x" * 80)
    c.feed(b"y" * 80)  # over the line cap: dropped until its newline
    c.feed(b"z" * 1000 + b"\n\n")
    assert c.truncated and len(c._pending) == 0
    c.feed(frame({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}))
    assert (c.answer().prompt_tokens, c.answer().completion_tokens) == (1, 2)


def test_in_band_error_marks_the_capture_failed() -> None:
    c = capture(delta({"content": "partial"}), frame({"error": {"message": "broke"}}))
    assert c.failed and c.answer().text == "partial"


def test_multi_line_data_events_are_joined() -> None:
    c = capture(b'data: {"choices": [{"index": 0,\ndata: "delta": {"content": "ok"}}]}\n\n')
    assert c.answer().text == "ok"
