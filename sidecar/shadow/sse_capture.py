"""Rebuild the Answer of a streamed chat completion from the raw SSE bytes the sidecar relays.

Pure and incremental: ``feed`` takes the bytes exactly as they arrive (chunk boundaries fall
anywhere, even inside a UTF-8 sequence or a ``\\r\\n``), so the relay never waits for it and
never buffers a whole stream. Memory is bounded: past ``max_text`` characters of content and
tool arguments together, nothing more is kept and the capture is marked ``truncated``; an
event line longer than ``max_line`` bytes is dropped and also marks it truncated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from holdfast.compare import Answer, canonical_arguments
from sidecar.upstream.provider_json import provider_json, usage_counts

DEFAULT_MAX_TEXT: Final = 256 * 1024
DEFAULT_MAX_LINE: Final = 1024 * 1024
_DONE: Final = b"[DONE]"


@dataclass(slots=True)
class _ToolCall:
    name: list[str] = field(default_factory=list)
    arguments: list[str] = field(default_factory=list)


class SseCapture:
    def __init__(self, *, max_text: int = DEFAULT_MAX_TEXT, max_line: int = DEFAULT_MAX_LINE):
        self._max_text = max_text
        self._max_line = max_line
        self._pending = bytearray()  # bytes after the last newline seen
        self._skipping_line = False  # inside an over-long line, dropping until its newline
        self._data: list[bytes] = []  # data lines of the event being read
        self._text: list[str] = []
        self._tools: dict[int, _ToolCall] = {}
        self._kept = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.truncated = False
        self.failed = False  # the stream carried an in-band error event
        self.done = False  # [DONE] seen

    def feed(self, chunk: bytes) -> None:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                self._hold(chunk[start:])
                return
            if self._skipping_line:
                self._skipping_line = False
            else:
                self._pending += chunk[start:end]
                line = bytes(self._pending)
                self._pending.clear()
                self._line(line[:-1] if line.endswith(b"\r") else line)
            start = end + 1

    def _hold(self, rest: bytes) -> None:
        if self._skipping_line or not rest:
            return
        if len(self._pending) + len(rest) > self._max_line:
            self._pending.clear()
            self._skipping_line = True
            self.truncated = True
            return
        self._pending += rest

    def _line(self, line: bytes) -> None:
        if not line:
            if self._data:
                data, self._data = b"\n".join(self._data), []
                self._event(data)
            return
        if line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        # Other fields (event:, id:, retry:) and comments carry nothing an Answer needs.

    def _event(self, data: bytes) -> None:
        if data == _DONE:
            self.done = True
            return
        event = provider_json(data, "sse_capture")
        if not isinstance(event, dict):
            return
        if "error" in event:
            self.failed = True
            return
        counts = usage_counts(event, "sse_capture")
        if counts is not None:
            self.prompt_tokens, self.completion_tokens = counts
        choices = event.get("choices")
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict) and choice.get("index", 0) == 0:
                    delta = choice.get("delta")
                    if isinstance(delta, dict):
                        self._delta(delta)

    def _delta(self, delta: dict[str, Any]) -> None:
        content = delta.get("content")
        if isinstance(content, str) and content:
            self._keep(self._text, content)
        calls = delta.get("tool_calls")
        if not isinstance(calls, list):
            return
        for call in calls:
            if not isinstance(call, dict):
                continue
            index = call.get("index", 0)
            if not isinstance(index, int):
                continue
            function = call.get("function")
            if not isinstance(function, dict):
                continue
            slot = self._tools.get(index)
            if slot is None:
                if len(self._tools) >= 128:  # a stream naming endless tool slots is bounded too
                    self.truncated = True
                    continue
                slot = self._tools[index] = _ToolCall()
            name, arguments = function.get("name"), function.get("arguments")
            if isinstance(name, str) and name:
                self._keep(slot.name, name)
            if isinstance(arguments, str) and arguments:
                self._keep(slot.arguments, arguments)

    def _keep(self, into: list[str], piece: str) -> None:
        # Once anything was dropped, keep nothing more: a text with a hole in it would compare
        # worse than the same text cut cleanly.
        if self.truncated or self._kept + len(piece) > self._max_text:
            self.truncated = True
            return
        self._kept += len(piece)
        into.append(piece)

    def answer(self) -> Answer:
        calls = tuple(
            ("".join(c.name), canonical_arguments("".join(c.arguments)))
            for _, c in sorted(self._tools.items())
        )
        return Answer(
            text="".join(self._text),
            tool_calls=calls,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
        )
