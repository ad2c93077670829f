"""JSON-RPC 2.0 framing of MCP messages, pure: parse a POST body into messages, build replies.

A body is one message or (where the negotiated revision allows it) a batch of them. Parsing
never raises for the sender's sake: a body that is not JSON, not an object, or an empty batch is
a ``WireError`` carrying the JSON-RPC code to answer with; each message of a batch that is not a
well-formed request, notification or response becomes an ``Invalid`` answered on its own, so one
bad member does not sink the others (JSON-RPC 2.0, section 6).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from holdfast.json_limits import DEFAULT_MAX_JSON_DEPTH, JsonRefused, loads_bounded

JSONRPC: Final = "2.0"
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
# -32000..-32019 are implementation-defined (2026-07-28, basic#error-codes): Holdfast's own.
SESSION_NOT_OWNED: Final = -32001
CONFIG_UNAVAILABLE: Final = -32002
# -32020..-32099 are the specification's.
HEADER_MISMATCH: Final = -32020
MISSING_REQUIRED_CLIENT_CAPABILITY: Final = -32021
UNSUPPORTED_PROTOCOL_VERSION: Final = -32022
MAX_BATCH: Final = 64
MAX_METHOD_CHARS: Final = 128

RequestId = str | int


@dataclass(frozen=True, slots=True)
class Request:
    id: RequestId
    method: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Notification:
    method: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Response:
    """A client's answer to a server-initiated request (the sidecar sends none: dropped)."""

    id: RequestId
    result: Any = None
    error: Any = None


@dataclass(frozen=True, slots=True)
class Invalid:
    """A batch member (or the one message) that is no valid JSON-RPC message."""

    id: RequestId | None
    message: str
    code: int = INVALID_REQUEST


Message = Request | Notification | Response | Invalid


@dataclass(frozen=True, slots=True)
class Body:
    messages: tuple[Message, ...]
    batch: bool


class WireError(ValueError):
    """The body as a whole cannot be read; answered with ``code`` and id null."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _id(value: Any) -> RequestId | None:
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    return value


def message(obj: Any) -> Message:
    """One decoded JSON value as a JSON-RPC message."""
    if not isinstance(obj, dict):
        return Invalid(None, "a JSON-RPC message must be an object")
    ident = _id(obj.get("id"))
    if obj.get("jsonrpc") != JSONRPC:
        return Invalid(ident, 'a JSON-RPC message needs "jsonrpc": "2.0"')
    if "method" in obj:
        method = obj["method"]
        if not isinstance(method, str) or not method or len(method) > MAX_METHOD_CHARS:
            return Invalid(ident, f"method must be a string of 1-{MAX_METHOD_CHARS} characters")
        params = obj.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            # MCP params are always an object (by-name); positional params mean nothing here.
            return Invalid(ident, "params must be an object", INVALID_PARAMS)
        if "id" not in obj:
            return Notification(method, params)
        if ident is None:
            return Invalid(None, "id must be a string or an integer")
        return Request(ident, method, params)
    if "result" in obj or "error" in obj:
        if ident is None:
            return Invalid(None, "a response needs the id of its request")
        return Response(ident, obj.get("result"), obj.get("error"))
    return Invalid(ident, "neither a request, a notification nor a response")


def parse(raw: bytes, *, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> Body:
    """A POST body as its messages; WireError when it cannot be read at all."""
    try:
        decoded = loads_bounded(raw, max_depth)
    except JsonRefused as exc:
        raise WireError(PARSE_ERROR, f"the body is not valid JSON: {exc}") from exc
    if isinstance(decoded, list):
        if not decoded:
            raise WireError(INVALID_REQUEST, "an empty batch is no request")
        if len(decoded) > MAX_BATCH:
            raise WireError(INVALID_REQUEST, f"a batch holds at most {MAX_BATCH} messages")
        return Body(tuple(message(m) for m in decoded), batch=True)
    return Body((message(decoded),), batch=False)


def result(ident: RequestId, value: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": JSONRPC, "id": ident, "result": value}


def error(ident: RequestId | None, code: int, text: str, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": text}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": JSONRPC, "id": ident, "error": err}


def notification(method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": JSONRPC, "method": method}
    if params is not None:
        body["params"] = params
    return body


def request(ident: RequestId, method: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": JSONRPC, "id": ident, "method": method, "params": params}


# The HTTP status of a reply that carries only this error (2026-07-28 transports; earlier
# revisions answer errors with 200 or 400 alike, and the clients read the JSON-RPC code).
HTTP_STATUS: Final[dict[int, int]] = {
    PARSE_ERROR: 400,
    INVALID_REQUEST: 400,
    INVALID_PARAMS: 400,
    HEADER_MISMATCH: 400,
    MISSING_REQUIRED_CLIENT_CAPABILITY: 400,
    UNSUPPORTED_PROTOCOL_VERSION: 400,
    METHOD_NOT_FOUND: 404,
    SESSION_NOT_OWNED: 403,
    CONFIG_UNAVAILABLE: 503,
}
