"""The primary's streamed answer, rebuilt for comparison from the events the sidecar relays.

Fed the neutral view of each event (decoded once by the dialect for every filter), so the relay
never waits for it and never buffers a whole stream. Memory is bounded: past ``max_text``
characters of text and tool arguments together, nothing more is kept and the capture is marked
``truncated`` (a text with a hole in it would compare worse than the same text cut cleanly).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from holdfast.compare import Answer, canonical_arguments
from holdfast.dialects import EventView, ToolCall, Usage

DEFAULT_MAX_TEXT: Final = 256 * 1024


class StreamCapture:
    __slots__ = ("_calls", "_kept", "_max_text", "_text", "failed", "truncated", "usage")

    def __init__(self, *, max_text: int = DEFAULT_MAX_TEXT) -> None:
        self._max_text = max_text
        self._text: list[str] = []
        self._calls: list[ToolCall] = []
        self._kept = 0
        self.usage: Usage | None = None
        self.truncated = False
        self.failed = False  # the stream carried an in-band error event

    def feed(self, view: EventView) -> None:
        if view.error:
            self.failed = True
        if view.usage is not None:
            self.usage = view.usage
        if view.text:
            self._keep(view.text)
        if view.calls:
            self.calls(view.calls)

    def calls(self, calls: Sequence[ToolCall]) -> None:
        for call in calls:
            if call.choice == 0 and self._keep(call.arguments, text=False):
                self._calls.append(call)

    def _keep(self, piece: str, *, text: bool = True) -> bool:
        if self.truncated or self._kept + len(piece) > self._max_text:
            self.truncated = True
            return False
        self._kept += len(piece)
        if text:
            self._text.append(piece)
        return True

    def answer(self) -> Answer:
        usage = self.usage
        return Answer(
            text="".join(self._text),
            tool_calls=tuple(
                (c.name, canonical_arguments(c.arguments))
                for c in sorted(self._calls, key=lambda c: c.index)
            ),
            prompt_tokens=usage.prompt if usage is not None else 0,
            completion_tokens=usage.completion if usage is not None else 0,
        )
