"""Server-sent events as every dialect frames them: the data of one event, and writing one. Pure."""

from __future__ import annotations

from typing import Any

import orjson


def sse_data(event: bytes) -> bytes | None:
    """The ``data`` payload of one SSE event (multi-line data joined), or None if it has none."""
    if event.startswith(b"data: ") and event.count(b"\n") <= 2 and b"\r" not in event:
        return event[6:].rstrip(b"\n")  # the common one-line event, without splitting lines
    lines = [
        line[5:].removeprefix(b" ") for line in event.splitlines() if line.startswith(b"data:")
    ]
    return b"\n".join(lines) if lines else None


def data_event(payload: Any, event: str | None = None) -> bytes:
    """One SSE event carrying ``payload`` as JSON (with an ``event:`` name when given)."""
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"
