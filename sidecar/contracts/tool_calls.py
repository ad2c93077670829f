"""The tool calls a model returns, whole (non-streaming) or in fragments (streaming). Pure.

Streaming chat completions send each call's ``id`` and ``function.name`` in its first delta and
its ``function.arguments`` in fragments, keyed by the call's ``index`` within its choice.
Providers may interleave the fragments of parallel calls (index 0, 1, 0, 1...), so a call is
complete only when its choice reports a ``finish_reason`` or the stream ends -- never merely
because another index started. A new ``id`` at an index already in use (providers that number
every call 0) does complete the earlier call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

MAX_ARGUMENT_BYTES: Final = 1 << 20
DONE: Final = b"[DONE]"


@dataclass(frozen=True, slots=True)
class ToolCall:
    choice: int
    index: int
    name: str
    arguments: str
    truncated: bool = False  # arguments grew past MAX_ARGUMENT_BYTES and were cut


def from_body(body: Mapping[str, Any]) -> Iterator[ToolCall]:
    """The tool calls of a non-streaming chat completion."""
    choices = body.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, dict) else None
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        for i, call in enumerate(calls if isinstance(calls, list) else ()):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                continue
            name, arguments = function.get("name"), function.get("arguments")
            yield ToolCall(
                choice=_int(choice.get("index"), 0),
                index=i,
                name=name if isinstance(name, str) else "",
                arguments=arguments if isinstance(arguments, str) else json.dumps(arguments),
            )


def sse_data(event: bytes) -> bytes | None:
    """The ``data`` payload of one SSE event (multi-line data joined), or None if it has none."""
    lines = [
        line[5:].removeprefix(b" ") for line in event.splitlines() if line.startswith(b"data:")
    ]
    return b"\n".join(lines) if lines else None


@dataclass(slots=True)
class _Open:
    id: str = ""
    name: str = ""
    parts: list[str] = field(default_factory=list)
    size: int = 0
    truncated: bool = False


class StreamedCalls:
    """Accumulates argument fragments per (choice, index); hands back each call once complete."""

    def __init__(self, max_argument_bytes: int = MAX_ARGUMENT_BYTES) -> None:
        self._open: dict[tuple[int, int], _Open] = {}
        self._max = max_argument_bytes

    @property
    def open_names(self) -> list[str]:
        """The names of the calls still arriving ("" while a call's name has not come yet)."""
        return [call.name for call in self._open.values()]

    def feed(self, chunk: Mapping[str, Any]) -> list[ToolCall]:
        """Take one parsed ``chat.completion.chunk``; return the calls it completed."""
        done: list[ToolCall] = []
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict):
                continue
            c = _int(choice.get("index"), 0)
            delta = choice.get("delta")
            calls = delta.get("tool_calls") if isinstance(delta, dict) else None
            for position, call in enumerate(calls if isinstance(calls, list) else ()):
                if isinstance(call, dict):
                    done.extend(self._take(c, _int(call.get("index"), position), call))
            if choice.get("finish_reason") is not None:
                done.extend(self._close(lambda key, c=c: key[0] == c))
        return done

    def _take(self, c: int, i: int, call: dict[str, Any]) -> list[ToolCall]:
        done: list[ToolCall] = []
        raw_id = call.get("id")
        call_id = raw_id if isinstance(raw_id, str) else ""
        entry = self._open.get((c, i))
        if entry is not None and call_id and entry.id and call_id != entry.id:
            done.append(_whole(c, i, self._open.pop((c, i))))  # a new call at a reused index
            entry = None
        if entry is None:
            entry = self._open[(c, i)] = _Open(id=call_id)
        elif call_id and not entry.id:
            entry.id = call_id
        function = call.get("function")
        if isinstance(function, dict):
            if isinstance(function.get("name"), str) and not entry.name:
                entry.name = function["name"]
            fragment = function.get("arguments")
            if isinstance(fragment, str) and fragment and not entry.truncated:
                entry.size += len(fragment)
                if entry.size > self._max:
                    entry.truncated = True
                    entry.parts.clear()
                else:
                    entry.parts.append(fragment)
        return done

    def finish(self) -> list[ToolCall]:
        """The stream ended: every call still open is complete."""
        return self._close(lambda key: True)

    def _close(self, which: Any) -> list[ToolCall]:
        keys = sorted(k for k in self._open if which(k))
        return [_whole(key[0], key[1], self._open.pop(key)) for key in keys]


def _whole(c: int, i: int, entry: _Open) -> ToolCall:
    return ToolCall(c, i, entry.name, "".join(entry.parts), entry.truncated)


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default
