"""Fuzz the dialects' ``skim`` against their ``feed``: whatever chunk it accepts, its view and
the decoder's state after it are the full decode's. Chunks are events built near the plain
shape (members a decoder reads, duplicates, escapes, non-ASCII, both JSON spacings), then
perhaps cut, glued or with a byte replaced."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from holdfast.dialects import StreamDecoder
from holdfast.dialects.anthropic_answers import MessagesStream
from holdfast.dialects.openai_chat import ChatStream
from holdfast.dialects.openai_responses import ResponsesStream
from tests.fuzz.bounds import bounded

FAST = settings(
    max_examples=300, deadline=500, database=None, suppress_health_check=[HealthCheck.too_slow]
)

plain = st.text(alphabet=st.sampled_from("ab ☃é{}[],:'"), max_size=12)
texts = plain | plain | st.text(alphabet=st.sampled_from('ab "\\\n\t☃\x00\x7f'), max_size=12)
scalars: st.SearchStrategy[Any] = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | texts | st.just([])
)
keys = st.sampled_from(
    ["id", "id", "model", "x_y", "usage", "error", "choices", "type", "delta", "index", "é"]
)
members = st.lists(
    st.tuples(keys, scalars | scalars | st.dictionaries(keys, scalars, max_size=2)), max_size=2
)


class Raw(bytes):
    """A member's value already encoded (a nested object whose member order matters)."""


def encode(pairs: list[tuple[str, Any]], spaced: bool) -> Raw:
    """A JSON object with its members in this order, duplicates kept."""
    sep, colon = (b", ", b": ") if spaced else (b",", b":")

    def dump(value: Any) -> bytes:
        if isinstance(value, Raw):
            return value
        return json.dumps(
            value, ensure_ascii=False, separators=(sep.decode(), colon.decode())
        ).encode()

    return Raw(b"{" + sep.join(dump(k) + colon + dump(v) for k, v in pairs) + b"}")


@st.composite
def chat_chunks(draw: st.DrawFn) -> bytes:
    spaced = draw(st.booleans())
    delta: list[tuple[str, Any]] = [("content", draw(texts | st.none()))]
    if draw(st.booleans()):
        delta.insert(0, ("role", "assistant"))
    if draw(st.booleans()):
        delta.append(draw(st.sampled_from([("refusal", "no"), ("tool_calls", [])])))
    choice = [("index", draw(st.sampled_from([0, 0, 1, True]))), ("delta", encode(delta, spaced))]
    choice += [(k, None) for k in draw(st.lists(st.sampled_from(["logprobs", "finish_reason"])))]
    if draw(st.booleans()):
        choice.append(("finish_reason", "stop"))
    listed = Raw(b"[" + encode(choice, spaced) + b"]")
    body = [*draw(members), ("choices", listed), *draw(members)]
    return b"data: " + encode(body, spaced) + b"\n\n"


@st.composite
def named_chunks(draw: st.DrawFn, kind: str, inner: str) -> bytes:
    spaced = draw(st.booleans())
    delta: Any = draw(texts)
    if inner:
        delta = encode([("type", inner), ("text", delta)], spaced)
    kinds = st.sampled_from([kind, kind, "ping"])
    body = [("type", draw(kinds)), *draw(members), ("delta", delta), *draw(members)]
    return f"event: {kind}\n".encode() + b"data: " + encode(body, spaced) + b"\n\n"


@st.composite
def mangled(draw: st.DrawFn, events: st.SearchStrategy[bytes]) -> bytes:
    event = draw(events)
    how = draw(st.sampled_from(["as is", "cut", "glued", "byte"]))
    if how == "cut":
        return event[: draw(st.integers(0, len(event)))]
    if how == "glued":
        return event + draw(events)
    if how == "byte" and event:
        at = draw(st.integers(0, len(event) - 1))
        return event[:at] + bytes([draw(st.integers(0, 255))]) + event[at + 1 :]
    return event


def agrees(make: Callable[[], StreamDecoder], prime: bytes, chunk: bytes) -> None:
    skimmer, decoder = make(), make()
    skimmer.feed(prime)
    decoder.feed(prime)
    with bounded(chunk):
        view = skimmer.skim(chunk)
    if view is not None:
        assert view == decoder.feed(chunk), chunk
        assert skimmer.open_calls == decoder.open_calls
        assert skimmer.finish() == decoder.finish()


CHAT_FIRST = b'data: {"id":"c","model":"m","choices":[]}\n\n'
MESSAGE_START = b'data: {"type":"message_start","message":{"usage":{"input_tokens":3}}}\n\n'


@FAST
@given(mangled(chat_chunks()))
def test_chat_skim_is_the_full_decode_or_nothing(chunk: bytes) -> None:
    agrees(ChatStream, CHAT_FIRST, chunk)


@FAST
@given(mangled(named_chunks("content_block_delta", "text_delta")))
def test_anthropic_skim_is_the_full_decode_or_nothing(chunk: bytes) -> None:
    agrees(MessagesStream, MESSAGE_START, chunk)


@FAST
@given(mangled(named_chunks("response.output_text.delta", "")))
def test_responses_skim_is_the_full_decode_or_nothing(chunk: bytes) -> None:
    agrees(ResponsesStream, b"data: {}\n\n", chunk)
