"""JSON from a provider or tool backend, parsed by filters that only observe it. Pure.

A hostile or broken upstream may answer with JSON nested a million levels deep (``json.loads``
raises RecursionError, not ValueError), integers past Python's conversion limit, NaN, or lone
UTF-16 surrogates (they parse, then fail whoever encodes the text again). ``provider_json``
turns all of that into ``None`` — the filter then treats the answer as "not a completion" and
passes it through untouched — and counts each refusal by where it happened, so a filter's
``on_body``/``on_event``/``close`` never raises because of an upstream's body.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any, Final

from holdfast.logs import get_logger
from sidecar.json_limits import DEFAULT_MAX_JSON_DEPTH, JsonRefused, loads_bounded

log = get_logger(__name__)

_SURROGATE_ESCAPE: Final = re.compile(rb"\\[uU][dD][89a-fA-F]")

# Refusals since start, by call site (read by tests; /status may show it).
REFUSED: Counter[str] = Counter()


def lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    return False


def provider_json(raw: bytes | str, where: str) -> Any | None:
    """The parsed value, or None (logged and counted) when the body is not safe JSON."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
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
