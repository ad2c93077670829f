"""JSON from untrusted input with a nesting limit: pure, no I/O.

Also refused: NaN/Infinity (Python's json accepts them; a provider would not), integers over
Python's 4300-digit conversion limit. Duplicate keys keep the last value: the body is
re-serialised from the parsed object, so the provider sees exactly what the sidecar checked.

``json.loads`` recurses per nesting level; a body of a million ``[`` would exhaust the stack
(RecursionError, not a ValueError) or allocate deep structures before any check ran. A cheap
byte count rules out most bodies at once; the rest are parsed, then walked iteratively.
"""

from __future__ import annotations

import json
from typing import Any, Final

DEFAULT_MAX_JSON_DEPTH: Final = 64
MIN_JSON_DEPTH: Final = 8
MAX_JSON_DEPTH: Final = 512


class JsonRefused(ValueError):
    """Not JSON, or nested deeper than the limit (the message says which)."""


def depth_over(value: Any, limit: int) -> bool:
    """True when ``value`` nests more than ``limit`` containers deep (iterative, no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 has no NaN or Infinity)")


def loads_bounded(raw: bytes | str, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> Any:
    """Parse JSON whose containers nest at most ``max_depth`` deep, else raise JsonRefused."""
    opens = (
        raw.count(b"[") + raw.count(b"{")
        if isinstance(raw, bytes)
        else raw.count("[") + raw.count("{")
    )
    try:
        value = json.loads(raw, parse_constant=_no_constant)
    except RecursionError as exc:
        raise JsonRefused(f"JSON nests deeper than {max_depth} levels") from exc
    except ValueError as exc:  # bad syntax or UTF-8, NaN/Infinity, an int over 4300 digits
        raise JsonRefused(f"not valid JSON: {str(exc)[:200]}") from exc
    if opens > max_depth and depth_over(value, max_depth):
        raise JsonRefused(f"JSON nests deeper than {max_depth} levels")
    return value
