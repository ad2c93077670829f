"""Fuzz the translations between provider APIs: an agent's request the dialect let through is
translated or refused (``Untranslatable``), a provider's answer is carried or refused
(``BadAnswer``, ``Untranslatable``), and a provider's stream -- any events, in any order --
never raises, each in bounded time and memory (tests/fuzz/bounds.py)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from holdfast.dialects import RequestRefused, by_name
from holdfast.translate import PAIRS, BadAnswer, Pair, Translation, Untranslatable
from sidecar.pipeline.sse import SseEvents
from tests.fuzz.bounds import bounded

FAST = settings(
    max_examples=80, deadline=500, database=None, suppress_health_check=[HealthCheck.too_slow]
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 10)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
# Fields every API has, so that examples get past the dialects' own checks and into the
# translation, with the shapes it reads (content parts, blocks, items, tool calls).
KEYS = [
    "model", "messages", "input", "system", "instructions", "tools", "tool_choice",
        "max_tokens", "max_output_tokens", "stream", "stop", "n", "temperature", "store",
        "thinking", "type", "role", "content", "text", "tool_calls", "tool_use_id",
        "call_id", "id", "name", "arguments", "input_schema", "function", "image_url",
        "source", "delta", "index", "usage", "choices", "message", "stop_reason",
        "finish_reason", "content_block", "partial_json", "output_tokens", "prompt_tokens",
]  # fmt: skip
shaped = st.recursive(
    json_values,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=5)
    ),
    max_leaves=20,
)
TYPES = [
    "text", "image", "tool_use", "tool_result", "thinking", "message", "function_call",
         "function_call_output", "reasoning", "input_text", "image_url", "function",
         "message_start", "content_block_start", "content_block_delta", "content_block_stop",
         "message_delta", "message_stop", "error", "ping", "text_delta", "input_json_delta",
]  # fmt: skip


def typed(value: Any, draw: Any) -> Any:
    """Give a part of the drawn value's dicts a known ``type`` (deeper paths of the readers)."""
    if isinstance(value, dict):
        out = {k: typed(v, draw) for k, v in value.items()}
        if draw(st.booleans()):
            out["type"] = draw(st.sampled_from(TYPES))
        return out
    if isinstance(value, list):
        return [typed(v, draw) for v in value]
    return value


@st.composite
def requests(draw: Any) -> dict[str, Any]:
    body = typed(draw(st.dictionaries(st.sampled_from(KEYS), shaped, max_size=6)), draw)
    body.setdefault("model", "m")
    if draw(st.booleans()):
        body["messages"] = typed(draw(st.lists(shaped, min_size=1, max_size=4)), draw)
        for m in body["messages"]:
            if isinstance(m, dict) and draw(st.booleans()):
                m["role"] = draw(st.sampled_from(["user", "assistant", "system", "tool", "x"]))
    if draw(st.booleans()):
        body["max_tokens"] = draw(st.integers(1, 100))
    return dict(body)


pairs = st.sampled_from(PAIRS)


@FAST
@given(pairs, requests())
def test_requests_are_translated_or_refused(pair: Pair, body: dict[str, Any]) -> None:
    with bounded(body):
        try:
            view = by_name(pair.agent).parse(body)
        except RequestRefused:
            return
        try:
            out = Translation(pair, view.body).request("https://p.example/v1")
        except Untranslatable:
            return
        json.dumps(out)  # what goes upstream is JSON


@FAST
@given(pairs, st.data())
def test_answers_are_carried_or_refused(pair: Pair, data: Any) -> None:
    answer = typed(data.draw(shaped), data.draw)
    raw = json.dumps(answer).encode()
    with bounded(raw):
        translation = Translation(pair, {"model": "m", "messages": [], "input": "x"})
        try:
            view, out = translation.answer(raw)
        except (BadAnswer, Untranslatable):
            return
        json.loads(out)
        assert view.choices == 1
        translation.error(400, raw)


@FAST
@given(pairs, st.data())
def test_streams_never_raise(pair: Pair, data: Any) -> None:
    events = data.draw(st.lists(shaped, max_size=10))
    events = [typed(e, data.draw) for e in events]
    raw = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    if data.draw(st.booleans()):
        raw += b"data: [DONE]\n\n"
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": True}}
    with bounded(raw):
        stream = Translation(pair, body).stream()
        for event in SseEvents().feed(raw):
            for _, out in stream.feed(event):
                assert isinstance(out, bytes)
        stream.decoder.finish()
