"""MCP protocol revisions and the two eras they fall in, pure.

The **handshake era** (2024-11-05 to 2025-11-25) opens with ``initialize``, keeps a session
under ``Mcp-Session-Id`` and sends server-initiated messages on a GET stream. The **modern
era** (2026-07-28, the current revision) is stateless: every request carries its protocol
version and client capabilities in ``params._meta``, mirrored in the ``MCP-Protocol-Version``,
``Mcp-Method`` and ``Mcp-Name`` headers; ``server/discover`` replaces the handshake and
``subscriptions/listen`` the GET stream. A request is routed to an era by its
``MCP-Protocol-Version`` header, as the reference SDK does: absent or a handshake revision is
the handshake era, anything else the modern one (which refuses versions it does not serve).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from holdfast.mcp import wire

Era = Literal["handshake", "modern"]

HANDSHAKE_VERSIONS: Final = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
MODERN_VERSIONS: Final = ("2026-07-28",)
LATEST_HANDSHAKE: Final = HANDSHAKE_VERSIONS[-1]
LATEST: Final = MODERN_VERSIONS[-1]
# JSON-RPC batches were allowed by 2025-03-26 only (added there, removed in 2025-06-18).
BATCHING_VERSIONS: Final = frozenset({"2025-03-26"})
# Before 2025-06-18 the client did not have to send MCP-Protocol-Version after initialize.
VERSION_HEADER_SINCE: Final = "2025-06-18"

PROTOCOL_VERSION_HEADER: Final = "MCP-Protocol-Version"
SESSION_HEADER: Final = "Mcp-Session-Id"
METHOD_HEADER: Final = "Mcp-Method"
NAME_HEADER: Final = "Mcp-Name"
PARAM_HEADER_PREFIX: Final = "Mcp-Param-"

PROTOCOL_VERSION_META: Final = "io.modelcontextprotocol/protocolVersion"
CLIENT_CAPABILITIES_META: Final = "io.modelcontextprotocol/clientCapabilities"
CLIENT_INFO_META: Final = "io.modelcontextprotocol/clientInfo"
SERVER_INFO_META: Final = "io.modelcontextprotocol/serverInfo"
SUBSCRIPTION_ID_META: Final = "io.modelcontextprotocol/subscriptionId"

# Which param a method names in Mcp-Name.
NAME_PARAMS: Final[Mapping[str, str]] = {
    "tools/call": "name",
    "prompts/get": "name",
    "resources/read": "uri",
}
_SENTINEL: Final = re.compile(r"^=\?base64\?(?P<payload>.*)\?=$")
_HEADER_SAFE: Final = re.compile(r"^[\x20-\x7E]*$")


def era_of(version_header: str | None) -> Era:
    if version_header is None or version_header in HANDSHAKE_VERSIONS:
        return "handshake"
    return "modern"


def negotiate(requested: Any) -> str:
    """The handshake answer: the client's revision when it is one we speak, else our latest
    (the client then decides whether it can go on, as the lifecycle section says)."""
    if isinstance(requested, str) and requested in HANDSHAKE_VERSIONS:
        return requested
    return LATEST_HANDSHAKE


def batching(version: str) -> bool:
    return version in BATCHING_VERSIONS


def needs_version_header(version: str) -> bool:
    return HANDSHAKE_VERSIONS.index(version) >= HANDSHAKE_VERSIONS.index(VERSION_HEADER_SINCE)


def encode_header_value(value: str) -> str:
    """A value as it may travel in an HTTP header: verbatim when printable ASCII without edge
    spaces, else in the ``=?base64?…?=`` wrapping the 2026-07-28 transport defines."""
    if _HEADER_SAFE.fullmatch(value) and value == value.strip() and not _SENTINEL.fullmatch(value):
        return value
    return f"=?base64?{base64.b64encode(value.encode()).decode('ascii')}?="


def decode_header_value(value: str | None) -> str | None:
    if value is None:
        return None
    found = _SENTINEL.fullmatch(value)
    if found is None:
        return value
    try:
        return base64.b64decode(found.group("payload"), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


@dataclass(frozen=True, slots=True)
class Refusal:
    code: int
    message: str
    data: Any = None


def check_envelope(request: wire.Request, headers: Mapping[str, str]) -> Refusal | str:
    """A modern request's envelope and its mirrored headers: the protocol version it speaks,
    or why it is refused (the rungs in the order the transport section gives them)."""
    meta = request.params.get("_meta")
    if not isinstance(meta, dict):
        return Refusal(
            wire.INVALID_PARAMS,
            f"params._meta must be an object carrying {PROTOCOL_VERSION_META!r} and "
            f"{CLIENT_CAPABILITIES_META!r}",
        )
    missing = [k for k in (PROTOCOL_VERSION_META, CLIENT_CAPABILITIES_META) if k not in meta]
    if missing:
        return Refusal(
            wire.INVALID_PARAMS, f"params._meta lacks the envelope key(s) {', '.join(missing)}"
        )
    version = meta[PROTOCOL_VERSION_META]
    if headers.get(PROTOCOL_VERSION_HEADER) != version:
        return Refusal(
            wire.HEADER_MISMATCH,
            f"the {PROTOCOL_VERSION_HEADER} header does not match the envelope's version",
        )
    if headers.get(METHOD_HEADER) != request.method:
        return Refusal(
            wire.HEADER_MISMATCH, f"the {METHOD_HEADER} header does not match the method"
        )
    named = NAME_PARAMS.get(request.method)
    if named is not None:
        value = request.params.get(named)
        if value is not None and decode_header_value(headers.get(NAME_HEADER)) != value:
            return Refusal(
                wire.HEADER_MISMATCH,
                f"the {NAME_HEADER} header does not match the request's {named!r}",
            )
    if not isinstance(version, str):
        return Refusal(wire.INVALID_PARAMS, "the envelope's protocol version must be a string")
    if version not in MODERN_VERSIONS:
        return Refusal(
            wire.UNSUPPORTED_PROTOCOL_VERSION,
            "Unsupported protocol version",
            {"supported": [*MODERN_VERSIONS], "requested": version},
        )
    return version
