"""OpenFeature Remote Evaluation Protocol (OFREP) served by the sidecar, from local config.

``POST /ofrep/v1/evaluate/flags/{key}`` evaluates one flag, ``POST /ofrep/v1/evaluate/flags``
all of them, with an ETag (``If-None-Match`` -> 304). Responses and errors use OFREP's own
shapes -- ``{"key", "value", "reason", "variant", "metadata"}`` and
``{"key", "errorCode", "errorDetails"}`` -- so any OpenFeature SDK's OFREP provider works.
Nothing here touches the network: evaluation reads the sidecar's current config snapshot.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from holdfast.flags.evaluate import Evaluation
from holdfast.json_limits import JsonRefused, loads_bounded, lone_surrogate
from holdfast.keyspace.keys import FLAG_KEY_RE
from holdfast.logs import get_logger
from sidecar.flags.evaluator import FlagEvaluator

log = get_logger(__name__)

PREFIX: Final = "/ofrep/v1/evaluate/flags"
MAX_BODY_BYTES: Final = 64 * 1024
MAX_CONTEXT_DEPTH: Final = 16
ETAG_BYTES: Final = 16
# OFREP status for each evaluation error code (FLAG_NOT_FOUND is 404, the rest 400).
STATUS: Final = {"FLAG_NOT_FOUND": 404}


class BadRequest(Exception):
    def __init__(self, code: str, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_CONTEXT_DEPTH:
            break
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)
    return deepest


def parse_context(raw: bytes) -> dict[str, Any]:
    """The evaluation context of an OFREP request body, or BadRequest with OFREP's code."""
    if len(raw) > MAX_BODY_BYTES:
        raise BadRequest("INVALID_CONTEXT", f"request body is larger than {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        body = loads_bounded(raw)
    except JsonRefused as exc:
        raise BadRequest("PARSE_ERROR", f"request body refused: {exc}") from exc
    if lone_surrogate(body):
        raise BadRequest("PARSE_ERROR", "request body has a lone UTF-16 surrogate in a string")
    if not isinstance(body, dict):
        raise BadRequest("PARSE_ERROR", "request body must be a JSON object")
    context = body.get("context", {})
    if context is None:
        return {}
    if not isinstance(context, dict):
        raise BadRequest("INVALID_CONTEXT", "'context' must be a JSON object")
    key = context.get("targetingKey")
    if key is not None and not isinstance(key, str):
        raise BadRequest("INVALID_CONTEXT", "'context.targetingKey' must be a string")
    if _depth(context) > MAX_CONTEXT_DEPTH:
        raise BadRequest("INVALID_CONTEXT", f"'context' nests deeper than {MAX_CONTEXT_DEPTH}")
    return context


def success(result: Evaluation) -> dict[str, Any]:
    """OFREP's success shape. No default variant (the code default serves): no ``value``, which
    OFREP's ``codeDefaultFlag`` and flagd use to say "use your code default", and an empty
    ``variant``, a name no variant can have (the flag schema refuses it). flagd omits the
    variant instead, but the Python OFREP provider (0.3) reads ``variant`` unconditionally and
    reports ERROR without it; the spec allows any string there."""
    if result.variant is None:
        return {
            "key": result.key,
            "reason": result.reason,
            "variant": "",
            "metadata": dict(result.metadata),
        }
    return {
        "key": result.key,
        "value": result.value,
        "reason": result.reason,
        "variant": result.variant,
        "metadata": dict(result.metadata),
    }


def failure(result: Evaluation) -> dict[str, Any]:
    return {"key": result.key, "errorCode": result.error_code, "errorDetails": result.error_details}


def etag_matches(header: str, etag: str) -> bool:
    candidates = [c.strip() for c in header.split(",")]
    return any(c == "*" or c.removeprefix("W/") == etag for c in candidates)


class OfrepApi:
    def __init__(self, evaluator: FlagEvaluator) -> None:
        self.evaluator = evaluator

    def routes(self) -> list[web.RouteDef]:
        return [web.post(PREFIX, self.bulk), web.post(f"{PREFIX}/{{key}}", self.single)]

    async def _context(self, request: web.Request) -> dict[str, Any]:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise BadRequest(
                "INVALID_CONTEXT", f"request body is larger than {MAX_BODY_BYTES} bytes"
            )
        try:
            raw = await request.content.read(MAX_BODY_BYTES + 1)
        except web.HTTPRequestEntityTooLarge as exc:
            raise BadRequest("INVALID_CONTEXT", "request body is too large") from exc
        return parse_context(raw)

    async def single(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        try:
            context = await self._context(request)
        except BadRequest as exc:
            return self._reply(
                "single", 400, {"key": key, "errorCode": exc.code, "errorDetails": exc.details}
            )
        if not FLAG_KEY_RE.fullmatch(key):
            details = f"flag {key!r:.130} is not defined (not a valid flag key)"
            body = {"key": key, "errorCode": "FLAG_NOT_FOUND", "errorDetails": details}
            return self._reply("single", 404, body)
        result = self.evaluator.one(key, context)
        if result.failed:
            return self._reply("single", STATUS.get(result.error_code or "", 400), failure(result))
        return self._reply("single", 200, success(result))

    async def bulk(self, request: web.Request) -> web.Response:
        try:
            context = await self._context(request)
        except BadRequest as exc:
            return self._reply("bulk", 400, {"errorCode": exc.code, "errorDetails": exc.details})
        results = self.evaluator.all(context)
        flags = [failure(r) if r.failed else success(r) for r in results]
        text = _dumps({"flags": flags, "metadata": {"revision": self.evaluator.revision}})
        etag = '"' + hashlib.sha256(text.encode()).hexdigest()[: ETAG_BYTES * 2] + '"'
        headers = {"ETag": etag}
        if etag_matches(request.headers.get("If-None-Match", ""), etag):
            self._count("bulk", 304)
            return web.Response(status=304, headers=headers)
        return self._reply("bulk", 200, text, headers)

    def _reply(
        self,
        endpoint: str,
        status: int,
        body: Mapping[str, Any] | str,
        headers: Mapping[str, str] | None = None,
    ) -> web.Response:
        self._count(endpoint, status)
        text = body if isinstance(body, str) else _dumps(body)
        return web.Response(
            status=status, text=text, content_type="application/json", headers=headers
        )

    def _count(self, endpoint: str, status: int) -> None:
        if self.evaluator.metrics is not None:
            self.evaluator.metrics.ofrep.labels(endpoint, str(status)).inc()
