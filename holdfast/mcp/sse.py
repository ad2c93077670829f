"""Server-sent events, pure: an incremental reader of the ``data`` of each event, and the frame
the sidecar writes. MCP sends one JSON-RPC message per event (``event: message`` or none)."""

from __future__ import annotations

import json
from typing import Any, Final

MAX_EVENT_BYTES: Final = 4 << 20


class SseTooLarge(ValueError):
    """One event (or a line without an end) outgrew the reader's limit."""


class SseReader:
    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self._buffer = b""
        self._data: list[bytes] = []
        self._size = 0
        self._event = b""
        self._limit = max_event_bytes

    def feed(self, chunk: bytes) -> list[str]:
        """The data of every event that ``chunk`` completes (events named other than
        ``message`` are skipped; comments and ``id``/``retry`` fields are ignored)."""
        self._buffer += chunk
        done: list[str] = []
        while True:
            cut = self._buffer.find(b"\n")
            if cut < 0:
                if len(self._buffer) > self._limit:
                    raise SseTooLarge(f"an SSE line is over {self._limit} bytes")
                return done
            line, self._buffer = self._buffer[:cut].rstrip(b"\r"), self._buffer[cut + 1 :]
            if not line:
                if self._data and self._event in (b"", b"message"):
                    done.append(b"\n".join(self._data).decode("utf-8", "replace"))
                self._data, self._size, self._event = [], 0, b""
                continue
            if line.startswith(b":"):
                continue
            name, _, value = line.partition(b":")
            value = value.removeprefix(b" ")
            if name == b"data":
                self._size += len(value)
                if self._size > self._limit:
                    raise SseTooLarge(f"an SSE event is over {self._limit} bytes")
                self._data.append(value)
            elif name == b"event":
                self._event = value


def frame(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
    return f"event: message\ndata: {data}\n\n".encode()


KEEPALIVE: Final = b": keepalive\n\n"
