"""StreamFeed: a chunk that is one whole event skips the splitter; what the filters see and what
the agent gets must not depend on that, nor on where the chunks were cut."""

from __future__ import annotations

import json

import pytest

from holdfast.dialects import EventView, openai_chat
from sidecar.pipeline.exchange import Chain
from sidecar.pipeline.sse import SseEvents
from sidecar.pipeline.stream_feed import StreamFeed


class Recorder:
    """An observer that keeps every event's text and bytes, and drops the usage-only one."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes | None]] = []

    def on_event(self, view: EventView, data: bytes | None) -> bytes | None:
        self.seen.append((view.text, data))
        return None if view.usage_only else data


def event(payload: object) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


def delta(text: str) -> bytes:
    return event({"choices": [{"index": 0, "delta": {"content": text}}]})


STREAM = [
    delta("Hel"),
    delta("lo"),
    event({"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}),
    b"data: [DONE]\n\n",
]


def relay(chunks: list[bytes]) -> tuple[bytes, list[tuple[str, bytes | None]]]:
    recorder = Recorder()
    feed = StreamFeed(Chain([("recorder", recorder)]), openai_chat.ChatStream())  # type: ignore[list-item]
    out = b"".join(feed.feed(c) for c in chunks) + feed.rest()
    return out, recorder.seen


def cuts(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
def test_one_event_per_chunk_is_relayed_as_any_other_cut(size: int) -> None:
    whole = b"".join(STREAM)
    expected_out = b"".join(STREAM[:2] + STREAM[3:])  # the usage-only event dropped
    per_event = relay(STREAM)
    assert per_event[0] == expected_out
    assert [text for text, _ in per_event[1]] == ["Hel", "lo", "", ""]
    assert relay(cuts(whole, size)) == per_event


def test_whole_means_exactly_one_event_and_nothing_buffered() -> None:
    events = SseEvents()
    assert events.whole(delta("a"))
    assert events.whole(b"\n\n")
    assert not events.whole(b"x")  # shorter than a boundary
    assert not events.whole(b"\n")
    assert not events.whole(delta("a") + delta("b"))  # two events
    assert not events.whole(delta("a")[:-1])  # not ended yet
    assert not events.whole(b"data: x\r\n\r\n")  # CRLF framing takes the splitter
    list(events.feed(b"data: {"))
    assert not events.whole(delta("a"))  # the start of an event is buffered


@pytest.mark.parametrize("size", [None, 1, 5, 64])
def test_a_translated_stream_is_translated_however_it_was_cut(size: int | None) -> None:
    """Regression: a chunk holding one whole provider event took the fast path and reached an
    agent of another API untranslated (an Anthropic event to the openai SDK: no choices)."""
    from holdfast.translate import BY_NAME, Translation
    from tests.unit.translation_cases import C2M, a_stream, a_text, chat_body

    provider = a_stream(a_text(0, "Hel", "lo"))

    def run(chunks: list[bytes]) -> bytes:
        translation = Translation(BY_NAME[C2M], chat_body(stream=True)).stream()
        feed = StreamFeed(Chain([]), translation.decoder, translation)
        return b"".join(feed.feed(c) for c in chunks) + feed.rest()

    whole = b"".join(provider)
    chunks = provider if size is None else cuts(whole, size)  # None: one event per chunk
    out = run(chunks)
    assert out == run([whole])
    payloads = [line[6:] for line in out.split(b"\n") if line.startswith(b"data: ")]
    assert payloads[-1] == b"[DONE]"
    chunks_out = [json.loads(p) for p in payloads[:-1]]
    assert all("choices" in c for c in chunks_out)  # chat chunks, nothing of Anthropic's
    assert (
        "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks_out if c["choices"])
        == "Hello"
    )
