"""JSON from untrusted input with a nesting limit: pure, no I/O.

Also refused: NaN/Infinity and numbers no double holds (Python's json accepts them and would
write them back as the non-JSON ``Infinity``), integers over Python's 4300-digit limit.
Duplicate keys keep the last value: the body is re-serialised from the parsed object, so the
provider sees exactly what the sidecar checked.

Parsing is orjson's (a fifth of the standard library's cost on a chat body; it refuses
NaN, lone surrogates, numbers that overflow a double and nesting past 1024 by itself). orjson
reads an integer beyond 64 bits as a float, so a text with a run of 19 digits goes to the
standard library instead, which keeps the integer exact; ``json.loads`` recurses per nesting
level (RecursionError on a million ``[``). Either way, a cheap byte count rules out most bodies
at once; the rest are walked iteratively after parsing.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Any, Final

import orjson

from holdfast.logs import get_logger

log = get_logger(__name__)

DEFAULT_MAX_JSON_DEPTH: Final = 64
MIN_JSON_DEPTH: Final = 8
MAX_JSON_DEPTH: Final = 512
# 19 digits: the shortest integer outside 64 bits (-9223372036854775809) orjson would round.
# On bytes, every digit becomes "0" and a substring search finds the run: a third of what a
# regular expression costs on a chat body.
_LONG_DIGITS: Final = 19
_DIGITS_TO_ZERO: Final = bytes.maketrans(b"123456789", b"0" * 9)
_ZEROS: Final = b"0" * _LONG_DIGITS
_LONG_DIGITS_TEXT: Final = re.compile(rf"\d{{{_LONG_DIGITS}}}", re.ASCII)
_SURROGATE_ESCAPE: Final = re.compile(rb"\\[uU][dD][89a-fA-F]")

# Provider and tool-backend bodies refused by ``provider_json`` since start, by call site.
REFUSED: Counter[str] = Counter()


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


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: re-encoded it would be the non-JSON "Infinity"
        raise ValueError(f"number is infinity when parsed as double: {text[:40]}")
    return value


def _constant_at(raw: bytes | str, pos: object) -> str:
    """ "NaN" or "Infinity" when the text at ``pos`` is one of Python's non-JSON constants."""
    if not isinstance(pos, int) or pos < 0:
        return ""
    head = raw[pos : pos + 9]
    text = head.decode("ascii", "replace") if isinstance(head, bytes) else head
    return next((c for c in ("NaN", "Infinity", "-Infinity") if text.startswith(c)), "")


def loads_bounded(raw: bytes | str, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> Any:
    """Parse JSON whose containers nest at most ``max_depth`` deep, else raise JsonRefused."""
    if isinstance(raw, bytes):
        opens = raw.count(b"[") + raw.count(b"{")
        exact_ints = len(raw) >= _LONG_DIGITS and _ZEROS in raw.translate(_DIGITS_TO_ZERO)
    else:
        opens = raw.count("[") + raw.count("{")
        exact_ints = _LONG_DIGITS_TEXT.search(raw) is not None
    try:
        value = (
            json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
            if exact_ints
            else orjson.loads(raw)
        )
    except RecursionError as exc:
        raise JsonRefused(f"JSON nests deeper than {max_depth} levels") from exc
    except ValueError as exc:  # syntax, UTF-8, NaN/Infinity, surrogates, huge numbers
        if opens > max_depth and "depth limit" in str(exc):  # orjson stops at 1024 levels
            raise JsonRefused(f"JSON nests deeper than {max_depth} levels") from exc
        constant = _constant_at(raw, getattr(exc, "pos", None))  # orjson only says "unexpected"
        reason = f"{constant} is not JSON (RFC 8259 has no NaN or Infinity)" if constant else exc
        raise JsonRefused(f"not valid JSON: {str(reason)[:200]}") from exc
    if opens > max_depth and depth_over(value, max_depth):
        raise JsonRefused(f"JSON nests deeper than {max_depth} levels")
    return value


def lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    return False


def provider_json(raw: bytes | str, where: str) -> Any | None:
    """JSON from a provider or a tool backend, for code that only observes it: the value, or
    None (logged and counted by ``where``) when the body is not safe JSON.

    A hostile or broken upstream may answer with JSON nested a million levels deep, integers
    past Python's conversion limit, NaN, or lone UTF-16 surrogates (they parse, then fail
    whoever encodes the text again). The caller then treats the answer as "not one it can read"
    and passes it through untouched: an observer never raises because of an upstream's body.
    """
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if data.count(b"{") + data.count(b"[") <= DEFAULT_MAX_JSON_DEPTH:
        # Cannot nest too deep. orjson refuses what is not JSON, NaN, lone surrogates and
        # numbers no double holds by itself; an integer beyond 64 bits it reads as a float,
        # which an observer may: it re-encodes nothing (usage readers refuse non-integers).
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            REFUSED[where] += 1
            log.info("provider_json_refused", where=where, reason=str(exc)[:120])
            return None
    try:
        value = loads_bounded(data, DEFAULT_MAX_JSON_DEPTH)
    except JsonRefused as exc:
        REFUSED[where] += 1
        log.info("provider_json_refused", where=where, reason=str(exc)[:120])
        return None
    if _SURROGATE_ESCAPE.search(data) and lone_surrogate(value):
        REFUSED[where] += 1
        log.info("provider_json_refused", where=where, reason="lone UTF-16 surrogate")
        return None
    return value
