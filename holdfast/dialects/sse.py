"""Server-sent events as every dialect frames them: the data of one event, and writing one. Pure."""

from __future__ import annotations

import re
from typing import Any, Final

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


# Building blocks of the patterns with which a dialect's ``skim`` proves, without parsing, that
# one chunk is exactly one plain event (see ``StreamDecoder.skim``). A JSON string without a
# backslash or a control character is its own UTF-8 text, and in such an event every quote is
# a real delimiter: no key can be spelled with escapes, and a marker inside a string value
# cannot end the string early. Compact JSON or one space after each colon and comma (as
# Python's json module writes it) is matched; anything else is parsed as before.
# Possessive quantifiers: no part of these patterns can match what follows it, so nothing is
# worth backtracking into (and the matcher keeps no state to do it).
SKIM_TEXT: Final = rb'"([^"\\\x00-\x1f]*+)"'
_SCALAR: Final = rb'(?:"[^"\\\x00-\x1f]*+"|-?+(?:0|[1-9][0-9]{0,14}+)|null|true|false|\[\])'


def skim_member(*excluded: str) -> bytes:
    """The pattern of one ``"key":scalar`` object member (no nesting, no escapes) whose key is
    none of ``excluded`` -- the keys a decoder reads, which a duplicate could override (JSON
    parsers keep a key's last value)."""
    names = b"|".join(re.escape(name.encode()) + b'"' for name in excluded)
    guard = b"(?!" + names + b")" if excluded else b""
    return b'"' + guard + rb'[A-Za-z_][A-Za-z0-9_.]{0,63}+": ?+' + _SCALAR


def skim_text(raw: bytes) -> str | None:
    """The text of a string matched by SKIM_TEXT; None when its bytes are not UTF-8 (the full
    decode then refuses the event as a JSON parser does)."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None
