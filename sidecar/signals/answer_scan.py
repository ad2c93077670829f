"""What an answer looked like, cheaply: tokens, the head of its text, tool calls, refusal.

Non-streaming bodies are parsed once. Streams are scanned event by event with byte searches;
only the rare events that matter (tool calls, the final usage, the first few content deltas
for the refusal check) are parsed as JSON, so a long stream costs a few ``in`` tests per event.

Refusal heuristic (documented in the README): the answer carries OpenAI's ``refusal`` field,
or the first 120 characters of its text start with, or contain, one of ``REFUSAL_PHRASES``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from sidecar.upstream.provider_json import provider_json, usage_counts

HEAD_CHARS: Final = 120
_TEXT_RE: Final = re.compile(rb'"content": ?"([^"]?)')  # group 1 empty: an empty delta
_RARE_RE: Final = re.compile(rb'"tool_calls"|"usage": ?\{|"refusal": ?"')
MAX_PARSED_BODY: Final = 1 << 20
MAX_EVENT_BYTES: Final = 1 << 16
MAX_TOOL_NAMES: Final = 16
REFUSAL_PHRASES: Final = (
    "i'm sorry",
    "i am sorry",
    "i can't help",
    "i cannot help",
    "i can't assist",
    "i cannot assist",
    "i'm unable to",
    "i am unable to",
    "i won't be able to",
    "as an ai",
)


@dataclass(frozen=True, slots=True)
class Answer:
    tokens_in: int
    tokens_out: int
    usage_known: bool  # reported by the provider (else estimated)
    empty: bool
    refusal: bool
    tools: tuple[str, ...]


def looks_like_refusal(head: str) -> bool:
    text = head[:HEAD_CHARS].lower().replace("\u2019", "'")
    return any(phrase in text for phrase in REFUSAL_PHRASES)


def prompt_estimate(body: Mapping[str, Any]) -> int:
    """Rough prompt tokens (4 characters a token) when the provider reported no usage."""
    chars = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                chars += len(content)
            elif isinstance(content, list):
                chars += sum(
                    len(p.get("text", "")) for p in content if isinstance(p, dict)
                    and isinstance(p.get("text"), str)
                )  # fmt: skip
    return (chars + 3) // 4


def _tool_names(calls: Any) -> list[str]:
    names: list[str] = []
    if isinstance(calls, list):
        for call in calls:
            fn = call.get("function") if isinstance(call, dict) else None
            name = fn.get("name") if isinstance(fn, dict) else None
            if isinstance(name, str) and name:
                names.append(name[:64])
    return names


def scan_body(body: bytes, request: Mapping[str, Any]) -> Answer | None:
    """A non-streaming chat answer; None when it is not one (oversized, not JSON, no choices)."""
    if len(body) > MAX_PARSED_BODY:
        return None
    obj = provider_json(body, "answer_scan")
    if not isinstance(obj, dict) or not isinstance(obj.get("choices"), list):
        return None
    text, tools, refused = "", [], False
    for choice in obj["choices"][:1]:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            content = message.get("content")
            text = content if isinstance(content, str) else ""
            tools = _tool_names(message.get("tool_calls"))
            refused = bool(message.get("refusal"))
    usage = usage_counts(obj, "answer_scan")  # absurd counts: estimated, like none
    if usage is None:
        tin, tout = prompt_estimate(request), (len(text) + 3) // 4
    else:
        tin, tout = usage
    return Answer(
        tokens_in=tin,
        tokens_out=tout,
        usage_known=usage is not None,
        empty=not text.strip() and not tools,
        refusal=refused or looks_like_refusal(text),
        tools=tuple(tools[:MAX_TOOL_NAMES]),
    )


def _content_text(event: bytes, start: int) -> str:
    """The text of a content delta, read by byte search (no JSON parse): good enough for the
    refusal check, which only looks at the head of the answer."""
    end = event.find(b'"', start)
    while end > 0 and event[end - 1] == 0x5C:  # an escaped quote: keep going
        end = event.find(b'"', end + 1)
    return event[start:end].decode("utf-8", "replace") if end > start else ""


class StreamScan:
    """Feeds on raw SSE chunks; ``answer()`` at the end says what the stream carried."""

    __slots__ = ("_broken", "_buf", "deltas", "head", "refusal", "tools", "usage")

    def __init__(self) -> None:
        self._buf = b""
        self.deltas = 0  # content deltas with text: the completion-token estimate
        self.head = ""
        self.tools: list[str] = []
        self.usage: tuple[int, int] | None = None
        self.refusal = False
        self._broken = False

    def feed(self, chunk: bytes) -> None:
        if self._broken:
            return
        buf = self._buf + chunk if self._buf else chunk
        start = 0
        while (end := buf.find(b"\n\n", start)) != -1:
            self._event(buf[start:end])
            start = end + 2
        self._buf = buf[start:]
        if len(self._buf) > MAX_EVENT_BYTES:  # not SSE as we know it: stop looking
            self._broken, self._buf = True, b""

    def _event(self, event: bytes) -> None:
        # Providers write compact JSON; a space after the colon is accepted too.
        text = _TEXT_RE.search(event)
        has_text = text is not None and text.group(1) != b""
        if has_text:
            self.deltas += 1
        if _RARE_RE.search(event) is None:
            if text is not None and has_text and len(self.head) < HEAD_CHARS:
                self.head += _content_text(event, text.start(1))
            return
        data = event[6:] if event.startswith(b"data: ") else event.partition(b"data:")[2]
        obj = provider_json(data, "answer_scan_event")
        if not isinstance(obj, dict):
            return
        self.usage = usage_counts(obj, "answer_scan_event") or self.usage
        choices = obj.get("choices")
        delta = None
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            delta = choices[0].get("delta")
        if not isinstance(delta, dict):
            return
        content = delta.get("content")
        if isinstance(content, str) and len(self.head) < HEAD_CHARS:
            self.head += content
        if delta.get("refusal"):
            self.refusal = True
        if len(self.tools) < MAX_TOOL_NAMES:
            self.tools.extend(_tool_names(delta.get("tool_calls")))

    def answer(self, request: Mapping[str, Any]) -> Answer:
        if self.usage is None:
            tin, tout = prompt_estimate(request), self.deltas
        else:
            tin, tout = self.usage
        return Answer(
            tokens_in=tin,
            tokens_out=tout,
            usage_known=self.usage is not None,
            empty=self.deltas == 0 and not self.tools,
            refusal=self.refusal or looks_like_refusal(self.head),
            tools=tuple(self.tools[:MAX_TOOL_NAMES]),
        )
