"""An agent's JSON body in and out: parsed with bounds, encoded again exactly as it was checked."""

from __future__ import annotations

import json
from typing import Any

import orjson

from holdfast.json_limits import DEFAULT_MAX_JSON_DEPTH, JsonRefused, loads_bounded
from sidecar.errors import InvalidRequest


def parse_body(raw: bytes, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> dict[str, Any]:
    """A JSON object, or InvalidRequest saying why not (its dialect checks the fields)."""
    try:
        body = loads_bounded(raw, max_depth)
    except JsonRefused as exc:
        raise InvalidRequest(f"request body is {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    return body


def encode_body(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:
        pass  # an integer beyond 64 bits (kept exact by the parser) or a lone surrogate
    try:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:  # a lone surrogate ("\\ud800") survives json.loads
        raise InvalidRequest("request body has a lone UTF-16 surrogate in a string") from exc
