"""The filter chain and the SSE event splitter: pure, no event loop."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from holdfast.dialects import Answer, EventView, ToolCall, openai_chat
from holdfast.keyspace import Release
from sidecar.errors import InvalidRequest
from sidecar.pipeline.exchange import Chain, Exchange, Observer, Outcome
from sidecar.pipeline.sse import EventTooLarge, SseEvents
from sidecar.routing.resolve import Resolved

STREAM = (
    b'data: {"a":1}\n\n'
    b'data: {"b":2}\r\n\r\n'
    b": keep-alive comment\n\n"
    b'data: {"usage":{"total_tokens":3}}\n\n'
    b"data: [DONE]\n\n"
)


def exchange() -> Exchange:
    release = Release(agent="a", name="r1", model="m", base_url="http://127.0.0.1:1")
    chat = openai_chat.DIALECT
    return Exchange(
        dialect=chat,
        request=chat.parse(
            {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]}
        ),
        resolved=Resolved(release=release, revision=1),
        request_id="req-1",
        headers={},
        decoder=chat.stream_decoder(),
    )


def test_events_are_whole_at_every_split_point() -> None:
    whole = list(SseEvents().feed(STREAM))
    assert len(whole) == 5 and b"".join(whole) == STREAM
    for cut in range(1, len(STREAM)):
        splitter = SseEvents()
        got = [*splitter.feed(STREAM[:cut]), *splitter.feed(STREAM[cut:])]
        assert got == whole, cut
        assert splitter.rest() == b""
    byte_by_byte = SseEvents()
    assert [e for i in range(len(STREAM)) for e in byte_by_byte.feed(STREAM[i : i + 1])] == whole


def test_a_cut_stream_leaves_its_tail_and_a_runaway_event_is_refused() -> None:
    splitter = SseEvents()
    assert list(splitter.feed(b'data: {"a":1}\n\ndata: {"par')) == [b'data: {"a":1}\n\n']
    assert splitter.rest() == b'data: {"par'
    with pytest.raises(EventTooLarge):
        list(SseEvents(max_event_bytes=10).feed(b"data: " + b"x" * 20))


class Recorder(Observer):
    def __init__(self, name: str, log: list[str], *, drop: bool = False, events: bool = False):
        self.name, self.log, self.drop, self.rewrites = name, log, drop, events

    def on_answer(self, status: int, answer: Answer | None) -> None:
        self.log.append(f"{self.name}.answer:{answer.text if answer else None}")

    def on_event(self, view: EventView, data: bytes | None) -> bytes | None:
        self.log.append(f"{self.name}.event:{data!r}")
        if not self.rewrites or data is None:
            return data
        return None if self.drop and view.usage_only else data.upper()

    def on_end(self, calls: Sequence[ToolCall]) -> None:
        self.log.append(f"{self.name}.end:{len(calls)}")

    def close(self, outcome: Outcome) -> None:
        self.log.append(f"{self.name}.close:{outcome.code}")


class Filter:
    def __init__(self, name: str, log: list[str], **kw: object) -> None:
        self.name, self.log, self.kw = name, log, kw

    def open(self, ex: Exchange) -> Observer | None:
        self.log.append(f"{self.name}.open")
        if self.kw.get("refuse"):
            raise InvalidRequest("no")
        if self.kw.get("skip"):
            return None
        return Recorder(self.name, self.log, **self.kw)  # type: ignore[arg-type]


def test_chain_order_rewrites_drops_and_closes_once() -> None:
    log: list[str] = []
    ex = exchange()
    chain = Chain.open(
        [Filter("a", log, events=True), Filter("s", log, skip=True),
         Filter("b", log, events=True, drop=True)],
        ex,
    )  # fmt: skip
    assert chain
    chain.answer(200, Answer("hi", (), None, False, 1))  # in filter order
    assert ex.decoder is not None
    event = b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
    # on the way back in reverse filter order, each sees what the later one left
    assert chain.event(ex.decoder.feed(event), event) == event.upper()
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}\n\n'
    assert chain.event(ex.decoder.feed(usage), usage) is None  # dropped by b: a sees None
    chain.end(ex.decoder.finish())
    chain.close(Outcome("ok", 200, 0.1, True))
    chain.close(Outcome("ok", 200, 0.1, True))
    assert log == [
        "a.open", "s.open", "b.open", "a.answer:hi", "b.answer:hi",
        f"b.event:{event!r}", f"a.event:{event.upper()!r}",
        f"b.event:{usage!r}", "a.event:None",
        "a.end:0", "b.end:0", "a.close:ok", "b.close:ok",
    ]  # fmt: skip


def test_a_refusal_closes_the_filters_already_opened() -> None:
    log: list[str] = []
    with pytest.raises(InvalidRequest):
        Chain.open([Filter("a", log), Filter("b", log, refuse=True), Filter("c", log)], exchange())
    assert log == ["a.open", "b.open", "a.close:refused"]
