"""Fuzz the sidecar's request parsing: only Holdfast's own errors, each input in bounded time
and memory (tests/fuzz/bounds.py).

hypothesis explores (derandomized: tests/fuzz/conftest.py); the committed corpus
(tests/fuzz/corpus/) replays tricky inputs on every run: deep nesting, huge numbers, invalid
UTF-8, NaN, duplicate keys, lone surrogates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from holdfast.dialects import RequestRefused, openai_chat
from holdfast.dialects.sse import sse_data
from sidecar.errors import InvalidRequest
from sidecar.pipeline.body import encode_body, parse_body
from sidecar.pipeline.sse import EventTooLarge, SseEvents
from sidecar.routing.session import SESSION_HEADER, session_id
from tests.fuzz.bounds import bounded

CORPUS = Path(__file__).parent / "corpus"
FAST = settings(
    max_examples=100, deadline=500, database=None, suppress_health_check=[HealthCheck.too_slow]
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=30,
)
bodies = st.dictionaries(
    st.sampled_from(["model", "messages", "user", "stream", "tools", "choices", "x"])
    | st.text(max_size=6),
    json_values,
    max_size=6,
)


def request_path(raw: bytes, header: str | None = None) -> None:
    """Everything the sidecar does with an agent's body before it goes upstream."""
    with bounded(raw):
        try:
            body = parse_body(raw, 64)
            encode_body(body)
            openai_chat.DIALECT.decode_body(raw)  # the same bytes, read as a provider's answer
            view = openai_chat.DIALECT.parse(body)
            session_id({SESSION_HEADER: header} if header is not None else {}, view.session_hint)
            view.output_cap()
            view.prompt_estimate("chars")
            view.prompt_estimate("bytes")
            view.declared_tools()
            view.system_slots()
            view.last_user_text(100)
        except (InvalidRequest, RequestRefused):
            pass


@FAST
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(raw: bytes) -> None:
    request_path(raw)


@FAST
@given(bodies, st.none() | st.text(max_size=40))
def test_structured_bodies(body: dict[str, Any], header: str | None) -> None:
    request_path(json.dumps(body).encode(), header)
    request_path(json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass"), header)


@FAST
@given(st.binary(max_size=4096), st.lists(st.integers(1, 64), max_size=20))
def test_sse_splitting_is_lossless(stream: bytes, cuts: list[int]) -> None:
    events = SseEvents(max_event_bytes=1024)
    out: list[bytes] = []
    pos = 0
    try:
        with bounded(stream):
            for size in [*cuts, len(stream)]:
                out.extend(events.feed(stream[pos : pos + size]))
                pos += size
            out.append(events.rest())
    except EventTooLarge:
        return
    assert b"".join(out) == stream
    for event in out:
        sse_data(event)


chunks = st.dictionaries(
    st.sampled_from(["choices", "x"]),
    st.lists(
        st.dictionaries(
            st.sampled_from(["delta", "index", "finish_reason"]),
            st.dictionaries(st.sampled_from(["tool_calls", "content"]), json_values) | json_values,
        ),
        max_size=3,
    )
    | json_values,
)


@FAST
@given(st.lists(chunks, max_size=8))
def test_stream_decoder(stream: list[dict[str, Any]]) -> None:
    decoder = openai_chat.DIALECT.stream_decoder()
    with bounded(stream):
        for chunk in stream:
            decoder.feed(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        decoder.finish()


@pytest.mark.parametrize("path", sorted((CORPUS / "request").iterdir()), ids=lambda p: p.name)
def test_request_corpus(path: Path) -> None:
    request_path(path.read_bytes(), "s-1")


@pytest.mark.parametrize("path", sorted((CORPUS / "sse").iterdir()), ids=lambda p: p.name)
def test_sse_corpus(path: Path) -> None:
    raw = path.read_bytes()
    events = SseEvents(max_event_bytes=4096)
    decoder = openai_chat.DIALECT.stream_decoder()
    if path.name == "no-terminator.sse":  # an unterminated event longer than the limit
        with pytest.raises(EventTooLarge), bounded(path.name):
            list(events.feed(raw))
        return
    with bounded(path.name):
        for cut in range(0, len(raw), 7):
            for event in events.feed(raw[cut : cut + 7]):
                sse_data(event)
                decoder.feed(event)
        decoder.feed(events.rest())
        decoder.finish()
