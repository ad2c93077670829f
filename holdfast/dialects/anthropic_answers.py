"""Anthropic Messages answers as the filters see them: a whole ``message`` (its content blocks,
stop reason and usage), a ``count_tokens`` result, and a stream's named events decoded one by
one (holdfast.dialects.anthropic_messages). Pure.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

from holdfast.dialects.base import (
    NO_EVENT,
    Answer,
    EventView,
    ToolCall,
    Usage,
    checked_usage,
    label,
)
from holdfast.dialects.sse import SKIM_TEXT, skim_member, skim_text, sse_data
from holdfast.dialects.tool_calls import MAX_ARGUMENT_BYTES, CallAssembler
from holdfast.json_limits import provider_json

PROMPT_USAGE: Final = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def _count_ok(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def usage_of(usage: object, where: str) -> Usage | None:
    """The prompt (input plus cache writes and reads) and output of a ``usage`` object; a count
    that is not a whole number is passed on as it is, for ``checked_usage`` to refuse."""
    if not isinstance(usage, dict):
        return None
    output = usage.get("output_tokens")
    if usage.get("input_tokens") is None and output is None:
        return None
    parts = [usage.get(name) for name in PROMPT_USAGE]
    bad = next((p for p in parts if p is not None and not _count_ok(p)), None)
    prompt = bad if bad is not None else sum(p for p in parts if isinstance(p, int))
    return checked_usage(prompt, output, where)


def _arguments(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def decode_body(body: bytes) -> Answer | None:
    obj = provider_json(body, "anthropic.messages.body")
    if not isinstance(obj, dict) or obj.get("type") != "message":
        return None
    content = obj.get("content")
    if not isinstance(content, list):
        return None
    texts: list[str] = []
    calls: list[ToolCall] = []
    chars = 0
    for i, block in enumerate(content):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(text := block.get("text"), str):
            texts.append(text)
            chars += len(text)
        elif kind == "tool_use":
            name = block.get("name")
            arguments = _arguments(block.get("input", {}))
            calls.append(ToolCall(0, i, name if isinstance(name, str) else "", arguments))
            chars += len(arguments)
        elif kind == "thinking" and isinstance(thinking := block.get("thinking"), str):
            chars += len(thinking)
    usage = usage_of(obj.get("usage"), "anthropic.messages.body")
    reason = label(obj.get("stop_reason"))
    return Answer(
        "".join(texts),
        tuple(calls),
        usage,
        reason == "refusal",
        math.ceil(chars / 4),
        finish_reasons=(reason,) if reason else (),
        response_model=label(obj.get("model")),
        response_id=label(obj.get("id")),
    )


def decode_count(body: bytes) -> Answer | None:
    """``{"input_tokens": N}``: nothing generated, and counting is free (usage 0)."""
    obj = provider_json(body, "anthropic.count_tokens.body")
    if not isinstance(obj, dict) or not isinstance(obj.get("input_tokens"), int):
        return None
    return Answer("", (), Usage(0, 0), False, 0, choices=0)


# A text delta as Anthropic writes it (its event line naming it or not): members the decoder
# reads (type, delta) are never among the scalars around the delta.
_MEMBER: Final = skim_member("type", "delta")
_PLAIN: Final = re.compile(
    rb"(?:event: ?+[a-z_]{1,64}+\n)?+"
    rb'data: ?+\{"type": ?+"content_block_delta"(?:, ?+' + _MEMBER + rb")*+"
    rb', ?+"delta": ?+\{"type": ?+"text_delta", ?+"text": ?+'
    + SKIM_TEXT
    + rb"\}(?:, ?+"
    + _MEMBER
    + rb")*+\}\n\n"
)


class MessagesStream:
    """Decodes the named events of one streamed message; tool calls assembled per content
    block from their ``input_json_delta`` fragments, complete at ``content_block_stop``."""

    __slots__ = ("_calls", "_chars", "_final", "_output", "_prompt", "_started")

    def __init__(self, max_argument_bytes: int = MAX_ARGUMENT_BYTES) -> None:
        self._calls = CallAssembler(max_argument_bytes)
        self._prompt: int | None = None  # None until message_start told it
        self._output = 0  # as the provider last reported it
        self._chars = 0  # of the text, tool input and thinking streamed so far
        self._final = False  # message_delta reported the output: no estimate any more
        self._started = False  # an event of this API arrived (message_start, ping, error)

    @property
    def open_calls(self) -> list[str]:
        return self._calls.open_names

    def finish(self) -> list[ToolCall]:
        return self._calls.finish()

    def _usage(self) -> Usage | None:
        if self._prompt is None:
            return None
        output = self._output if self._final else max(self._output, math.ceil(self._chars / 4))
        return Usage(self._prompt, output)

    def _report(self, usage: object) -> None:
        """Fold a usage object of message_start or message_delta into what is known."""
        if not isinstance(usage, dict):
            return
        known = usage_of(usage, "anthropic.messages.event")
        if known is None:
            return
        if usage.get("input_tokens") is not None or self._prompt is None:
            self._prompt = known.prompt
        if usage.get("output_tokens") is not None:
            self._output = known.completion

    def skim(self, chunk: bytes) -> EventView | None:
        # Not before the stream proved to be a Messages stream (``observe``'s first check).
        if not self._started or (match := _PLAIN.fullmatch(chunk)) is None:
            return None
        text = skim_text(match[1])
        if text is None:
            return None
        self._chars += len(text)
        return EventView(text, 1, usage=self._usage())

    def feed(self, event: bytes) -> EventView:
        data = sse_data(event)
        if data is None or not data.lstrip().startswith(b"{"):
            return NO_EVENT
        obj = provider_json(data, "anthropic.messages.event")
        if not isinstance(obj, dict):
            return NO_EVENT
        return self.observe(obj)

    def observe(self, obj: dict[str, Any]) -> EventView:
        """One event, already parsed (a translation reads the same object: one parse)."""
        kind = obj.get("type")
        if not self._started:
            # A Messages stream opens with message_start (a ping or an error may come first);
            # anything else first is another API's stream (OpenAI's chunks have no "type").
            if kind not in ("message_start", "ping", "error"):
                return EventView(foreign=True)
            self._started = True
        if kind == "content_block_delta":
            return self._delta(obj)
        if kind == "content_block_start":
            return self._start(obj)
        if kind == "content_block_stop":
            index = obj.get("index")
            calls = self._calls.end_call(0, index) if isinstance(index, int) else []
            return EventView(calls=calls) if calls else NO_EVENT
        if kind == "message_start":
            message = obj.get("message")
            if not isinstance(message, dict):
                return EventView(usage=self._usage())
            self._report(message.get("usage"))
            return EventView(
                usage=self._usage(),
                response_model=label(message.get("model")),
                response_id=label(message.get("id")),
            )
        if kind == "message_delta":
            delta = obj.get("delta")
            usage = obj.get("usage")
            if isinstance(usage, dict) and usage.get("output_tokens") is not None:
                self._final = True
            self._report(usage)
            reason = label(delta.get("stop_reason")) if isinstance(delta, dict) else ""
            return EventView(
                usage=self._usage(),
                refusal=reason == "refusal",
                finish_reasons=(reason,) if reason else (),
            )
        if kind == "message_stop":
            return EventView(done=True, calls=self._calls.finish())
        if kind == "error":
            return EventView(error=True)
        return NO_EVENT  # ping, and event types this module does not know yet

    def _start(self, obj: dict[str, Any]) -> EventView:
        block = obj.get("content_block")
        index = obj.get("index")
        if not isinstance(block, dict) or not isinstance(index, int):
            return NO_EVENT
        kind = block.get("type")
        if kind == "tool_use":
            name, call_id = block.get("name"), block.get("id")
            given = block.get("input")
            # The input streams as input_json_delta fragments after an empty object; a provider
            # that sends it whole here instead has it taken as the call's arguments.
            arguments = _arguments(given) if isinstance(given, dict) and given else ""
            self._calls.fragment(
                0,
                index,
                call_id if isinstance(call_id, str) else "",
                name if isinstance(name, str) else "",
                arguments,
            )
            self._chars += len(arguments)
            return EventView(content=1, usage=self._usage())
        if kind == "text" and isinstance(text := block.get("text"), str) and text:
            self._chars += len(text)
            return EventView(text=text, content=1, usage=self._usage())
        return NO_EVENT

    def _delta(self, obj: dict[str, Any]) -> EventView:
        delta = obj.get("delta")
        if not isinstance(delta, dict):
            return NO_EVENT
        kind = delta.get("type")
        if kind == "text_delta" and isinstance(text := delta.get("text"), str):
            self._chars += len(text)
            return EventView(text=text, content=1, usage=self._usage())
        if kind == "input_json_delta" and isinstance(part := delta.get("partial_json"), str):
            index = obj.get("index")
            if isinstance(index, int):
                self._calls.fragment(0, index, "", "", part)
            self._chars += len(part)
            return EventView(content=1, usage=self._usage())
        if kind == "thinking_delta" and isinstance(thinking := delta.get("thinking"), str):
            self._chars += len(thinking)
            return EventView(content=1, usage=self._usage())
        return NO_EVENT  # signature_delta, citations_delta: no tokens of their own to count
