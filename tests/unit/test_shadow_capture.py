"""StreamCapture: the Answer of a streamed completion, whatever the chunk boundaries (the relay
cuts chunks into events, the chat dialect decodes each, the capture keeps what compares)."""

from __future__ import annotations

import json

import pytest

from holdfast.compare import Answer
from holdfast.dialects import openai_chat
from sidecar.pipeline.sse import EventTooLarge, SseEvents
from sidecar.shadow.capture import StreamCapture


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


class Relayed:
    """A stream as the relay hands it to the shadow filter: events decoded, the end told."""

    def __init__(self, max_text: int = 256 * 1024) -> None:
        self.events = SseEvents()
        self.decoder = openai_chat.DIALECT.stream_decoder()
        self.capture = StreamCapture(max_text=max_text)
        self.done = False

    def feed(self, chunk: bytes) -> None:
        for event in self.events.feed(chunk):
            view = self.decoder.feed(event)
            self.done = self.done or view.done
            self.capture.feed(view)

    def end(self) -> StreamCapture:
        self.capture.feed(self.decoder.feed(self.events.rest()))
        self.capture.calls(self.decoder.finish())
        return self.capture


def capture(*chunks: bytes) -> StreamCapture:
    relayed = Relayed()
    for chunk in chunks:
        relayed.feed(chunk)
    return relayed.end()


def test_text_stream_gives_content_of_first_choice_and_usage() -> None:
    relayed = Relayed()
    relayed.feed(TEXT_STREAM)
    c = relayed.end()
    assert c.answer() == Answer("[m] h\u00e9llo \u2603 snow", (), 9, 3)
    assert relayed.done and not c.truncated and not c.failed


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
    relayed = Relayed(max_text=10)
    relayed.feed(
        delta({"content": "12345"}) + delta({"content": "6789abc"}) + delta({"content": "d"})
    )
    c = relayed.end()
    assert c.truncated
    assert c.answer().text == "12345"  # nothing after the first piece that did not fit


def test_an_over_long_event_is_refused_without_growing_memory() -> None:
    events = SseEvents(max_event_bytes=100)
    list(events.feed(b"data: " + b"x" * 80))
    with pytest.raises(EventTooLarge):
        list(events.feed(b"y" * 80))  # the relay ends such a stream: it is not SSE as we know


def test_in_band_error_marks_the_capture_failed() -> None:
    c = capture(delta({"content": "partial"}), frame({"error": {"message": "broke"}}))
    assert c.failed and c.answer().text == "partial"


def test_multi_line_data_events_are_joined() -> None:
    c = capture(b'data: {"choices": [{"index": 0,\ndata: "delta": {"content": "ok"}}]}\n\n')
    assert c.answer().text == "ok"
