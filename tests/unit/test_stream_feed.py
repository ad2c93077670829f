"""StreamFeed: a chunk that is one whole event skips the splitter, a plain one the parser too
(the dialect's skim); what the filters see and what the agent gets must not depend on that,
nor on where the chunks were cut."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from holdfast.dialects import EventView, ToolCall, openai_chat
from sidecar.pipeline.exchange import Chain
from sidecar.pipeline.sse import SseEvents
from sidecar.pipeline.stream_feed import SKIM_MISSES, StreamFeed


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


# -- the skim: plain text deltas matched by a pattern instead of parsed ------------------------


def compact(payload: object) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


NAMED = {"id": "chatcmpl-1", "model": "m"}
COMPACT = [
    compact(NAMED | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
    *(compact(NAMED | {"choices": [{"index": 0, "delta": {"content": t}}]}) for t in "Hello"),
    compact(NAMED | {"choices": [{"index": 0, "delta": {"content": 'say "hi"'}}]}),  # parsed
    compact(NAMED | {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
    compact(NAMED | {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 7}}),
    b"data: [DONE]\n\n",
]


class Counting:
    """A chat decoder that counts the skims it was asked for and the ones that matched."""

    def __init__(self) -> None:
        self.decoder = openai_chat.ChatStream()
        self.tried = self.matched = 0

    def skim(self, chunk: bytes) -> EventView | None:
        self.tried += 1
        view = self.decoder.skim(chunk)
        self.matched += view is not None
        return view

    def feed(self, event: bytes) -> EventView:
        return self.decoder.feed(event)

    @property
    def open_calls(self) -> list[str]:
        return self.decoder.open_calls

    def finish(self) -> list[ToolCall]:
        return self.decoder.finish()


class Usages(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.usage: list[tuple[int, int]] = []
        self.content = 0
        self.reasons: list[str] = []
        self.ended = False

    def on_event(self, view: EventView, data: bytes | None) -> bytes | None:
        self.content += view.content
        self.reasons += view.finish_reasons
        if view.usage is not None:
            self.usage.append((view.usage.prompt, view.usage.completion))
        return super().on_event(view, data)

    def on_end(self, calls: Sequence[ToolCall]) -> None:
        self.ended = True


def skimmed(chunks: list[bytes]) -> tuple[bytes, Usages, Counting]:
    recorder, decoder = Usages(), Counting()
    feed = StreamFeed(Chain([("recorder", recorder)]), decoder)  # type: ignore[list-item]
    out = b"".join(feed.feed(c) for c in chunks) + feed.rest()
    feed.end()
    return out, recorder, decoder


@pytest.mark.parametrize("size", [None, 1, 5, 64, 10_000])
def test_a_skimmed_stream_reads_as_a_parsed_one_however_it_was_cut(size: int | None) -> None:
    whole = b"".join(COMPACT)
    out, recorder, decoder = skimmed(COMPACT if size is None else cuts(whole, size))
    assert out == whole.replace(COMPACT[-2], b"")  # the usage-only event dropped, as before
    assert [t for t, _ in recorder.seen] == ["", *"Hello", 'say "hi"', "", "", ""]
    assert recorder.content == 6 and recorder.reasons == ["stop"]
    assert recorder.usage == [(3, 7)]  # budgets charge what the provider reported
    assert recorder.ended
    if size is None or size == 10_000:
        assert decoder.matched == 5  # every plain delta, whole or among the split events
    _, parsed, _ = relay_parsed(cuts(whole, size or 1))
    assert parsed.seen == recorder.seen


def relay_parsed(chunks: list[bytes]) -> tuple[bytes, Usages, None]:
    """The same stream through a decoder without a skim's matches (the full decode only)."""

    class Parsing(Counting):
        def skim(self, chunk: bytes) -> EventView | None:
            return None

    recorder = Usages()
    feed = StreamFeed(Chain([("recorder", recorder)]), Parsing())  # type: ignore[list-item]
    return b"".join(feed.feed(c) for c in chunks) + feed.rest(), recorder, None


def test_a_stream_cut_mid_event_still_counts_what_it_relayed() -> None:
    """The provider's stream breaks off mid-event: the whole events were counted once each (the
    skim never takes a part of one), the cut one is relayed as it came and reads as nothing."""
    whole = b"".join(COMPACT[:4])
    out, recorder, _ = skimmed([whole[:-10]])
    assert recorder.content == 2  # H and e; the role chunk has no content
    assert out == whole[:-10]


def test_a_layout_the_skim_does_not_know_stops_being_skimmed() -> None:
    other = [  # the delta before the index: a layout the pattern does not know
        compact({"choices": [{"delta": {"content": t}, "index": 0}]}) for t in "abcdefghijklmnop"
    ]
    _, recorder, decoder = skimmed([FIRST_CHAT, *other])
    assert decoder.tried == SKIM_MISSES + 1  # the first chunk, then SKIM_MISSES plain misses
    assert [t for t, _ in recorder.seen][1:] == list("abcdefghijklmnop")


def test_once_the_skim_matched_misses_never_stop_it() -> None:
    plain = COMPACT[1]
    escaped = COMPACT[6]  # plain too, but with an escape: parsed
    chunks = [COMPACT[0], plain, *[escaped] * (SKIM_MISSES + 4), plain]
    _, _, decoder = skimmed(chunks)
    assert decoder.tried == len(chunks) and decoder.matched == 2


FIRST_CHAT = COMPACT[0]
