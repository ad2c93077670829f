"""JSON from a provider or tool backend, parsed by filters that only observe it. Pure.

A hostile or broken upstream may answer with JSON nested a million levels deep (``json.loads``
raises RecursionError, not ValueError), integers past Python's conversion limit, NaN, or lone
UTF-16 surrogates (they parse, then fail whoever encodes the text again). ``provider_json``
turns all of that into ``None`` — the filter then treats the answer as "not a completion" and
passes it through untouched — and counts each refusal by where it happened, so a filter's
``on_body``/``on_event``/``close`` never raises because of an upstream's body.

``usage_counts`` is the one reader of a provider's ``usage`` token counts, for budgets, health
signals and shadow comparisons alike: a count that is not a whole number from 0 to
``MAX_USAGE_TOKENS`` makes the whole usage unknown (counted in ``USAGE_REJECTED``), so callers
fall back to their estimate instead of charging, summing or publishing an absurd number.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any, Final

from holdfast.json_limits import DEFAULT_MAX_JSON_DEPTH, JsonRefused, loads_bounded
from holdfast.logs import get_logger

log = get_logger(__name__)

_SURROGATE_ESCAPE: Final = re.compile(rb"\\[uU][dD][89a-fA-F]")

# No single answer comes near this; a count above it is a broken or hostile provider, and
# taken at face value it would overflow spend reports (limit 10^15) and health snapshots.
MAX_USAGE_TOKENS: Final = 10**9
_USAGE_FIELDS: Final = ("prompt_tokens", "completion_tokens")

# Refusals since start, by call site (read by tests; /status may show it).
REFUSED: Counter[str] = Counter()
# Provider usage objects refused by ``usage_counts`` since start, by call site (/metrics).
USAGE_REJECTED: Counter[str] = Counter()


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


def usage_counts(obj: object, where: str) -> tuple[int, int] | None:
    """``(prompt_tokens, completion_tokens)`` of ``obj["usage"]``; None when there is none.

    A missing count is 0 (embeddings report no completion), but at least one must be there.
    Counts that are not whole numbers in ``0..MAX_USAGE_TOKENS`` reject the usage (counted and
    logged): the caller treats the answer as one without usage and estimates it.
    """
    usage = obj.get("usage") if isinstance(obj, dict) else None
    if not isinstance(usage, dict):
        return None
    counts = [usage.get(name) for name in _USAGE_FIELDS]
    if all(c is None for c in counts):
        return None
    prompt, completion = (0 if c is None else c for c in counts)
    if all(
        isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= MAX_USAGE_TOKENS
        for c in (prompt, completion)
    ):
        return prompt, completion
    USAGE_REJECTED[where] += 1
    log.info(
        "provider_usage_rejected",
        where=where,
        prompt_tokens=repr(prompt)[:24],
        completion_tokens=repr(completion)[:24],
    )
    return None
