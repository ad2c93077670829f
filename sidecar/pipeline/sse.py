"""Split a byte stream of server-sent events into whole events, whatever the chunk boundaries."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

_BOUNDARY: Final = re.compile(rb"\r\n\r\n|\n\n|\r\r")
MAX_EVENT_BYTES: Final = 4 * 1024 * 1024


class EventTooLarge(ValueError):
    """An event grew past MAX_EVENT_BYTES without ending: the stream is not SSE we can handle."""


class SseEvents:
    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buffer = b""
        self._max = max_event_bytes

    def feed(self, chunk: bytes) -> Iterator[bytes]:
        """The events completed by ``chunk``, each with its terminating blank line."""
        data = self._buffer + chunk if self._buffer else chunk
        start = 0
        if b"\r" in data:
            for match in _BOUNDARY.finditer(data):
                yield data[start : match.end()]
                start = match.end()
        else:  # the common framing: a plain search is a fraction of the regular expression's cost
            while (end := data.find(b"\n\n", start)) != -1:
                yield data[start : end + 2]
                start = end + 2
        self._buffer = data[start:] if start else data
        if len(self._buffer) > self._max:
            raise EventTooLarge(f"an SSE event exceeded {self._max} bytes")

    @property
    def idle(self) -> bool:
        """Nothing is buffered: the next chunk starts an event."""
        return not self._buffer

    def whole(self, chunk: bytes) -> bool:
        """``chunk`` is exactly one whole event in the common framing and nothing is buffered:
        how providers stream (one event per write), so the caller may skip splitting."""
        return (
            not self._buffer
            and chunk.endswith(b"\n\n")
            and chunk.find(b"\n\n") == len(chunk) - 2
            and b"\r" not in chunk
        )

    def rest(self) -> bytes:
        """Whatever trailed the last complete event (a stream cut mid-event)."""
        rest, self._buffer = self._buffer, b""
        return rest
