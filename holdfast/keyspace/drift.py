"""Drift of an MCP backend from a pinned contract version: what a sidecar saw, and its record.

A sidecar that lists a backend's live ``tools/list`` and finds a tool that differs from a
contract version a session pins (another schema, or the tool gone) keeps the session on the
contract and reports the drift: its health snapshot carries the drifts it has seen (the most
recent ``MAX_DRIFT_REPORTED``), and configsvc records each distinct one once, as
``drift/<id>`` with an ``mcp.drift`` audit entry in the same transaction. The id names the tool,
the version and a digest of the backend and the live entry, so one drift seen by a hundred
sidecars (or again after a restart) is one record, and a backend that drifts again to another
schema is another.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Self

from holdfast.contracts import semver
from holdfast.contracts.schema import content_hash
from holdfast.keyspace import fields
from holdfast.keyspace.codec import RecordError, decode_record, encode_record
from holdfast.keyspace.fields import check_name
from holdfast.keyspace.keys import ID_RE
from holdfast.keyspace.records import validate_base_url

MAX_DRIFT_REPORTED: Final = 32
MAX_DETAIL: Final = 200
DIGEST_CHARS: Final = 32


def live_hash(live: Any) -> str:
    """The content hash of a backend's live tool entry (None: the tool is not listed)."""
    return content_hash({"live": live})


def drift_id(backend: str, tool: str, version: str, live: str) -> str:
    """The id of a ``drift/<id>`` record: one per backend, tool, version and live entry."""
    digest = hashlib.sha256(f"{backend}\n{live}".encode()).hexdigest()
    return f"{tool}@{version}.{digest[:DIGEST_CHARS]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class McpDrift:
    KIND: ClassVar[str] = "mcp_drift"
    backend: str
    tool: str
    version: str
    live: str  # live_hash() of what the backend lists now
    detail: str  # what changed, in words ("inputSchema changed")
    toolset: str
    release: str  # the release whose pinned version it drifted from (the first seen)
    at: float
    agent: str = ""  # filled in from the snapshot that carried it
    sidecar_id: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", validate_base_url(self.backend))
        check_name(self.tool, what="tool")
        if not semver.is_version(self.version):
            raise RecordError(f"invalid contract version {self.version!r:.40}")
        check_name(self.toolset, what="tool set")
        check_name(self.release, what="release")
        check_name(self.agent, what="agent", optional=True)
        if self.sidecar_id and not ID_RE.fullmatch(self.sidecar_id):
            raise RecordError(f"invalid sidecar id {self.sidecar_id!r:.140}")
        if not self.live.startswith("sha256:") or len(self.live) > 80:
            raise RecordError("a drift's live hash must be a sha256 content hash")
        object.__setattr__(self, "detail", self.detail[:MAX_DETAIL])

    @property
    def ident(self) -> str:
        return drift_id(self.backend, self.tool, self.version, self.live)

    @property
    def contract(self) -> str:
        return f"{self.tool}@{self.version}"

    def to_map(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "tool": self.tool,
            "version": self.version,
            "live": self.live,
            "detail": self.detail,
            "toolset": self.toolset,
            "release": self.release,
            "at": self.at,
            "agent": self.agent,
            "sidecar_id": self.sidecar_id,
        }

    @classmethod
    def from_map(cls, f: dict[str, Any]) -> Self:
        return cls(
            backend=fields.text(f, "backend"),
            tool=fields.name(f, "tool"),
            version=fields.text(f, "version"),
            live=fields.text(f, "live"),
            detail=fields.text(f, "detail", optional=True),
            toolset=fields.name(f, "toolset"),
            release=fields.name(f, "release"),
            at=fields.finite(f, "at"),
            agent=fields.name(f, "agent", optional=True),
            sidecar_id=fields.text(f, "sidecar_id", optional=True),
        )

    def encode(self) -> bytes:
        return encode_record(self.KIND, self.to_map())

    @classmethod
    def decode(cls, data: bytes) -> Self:
        return cls.from_map(decode_record(data, kind=cls.KIND))


def decode_drifts(raw: list[dict[str, Any]]) -> tuple[McpDrift, ...]:
    if len(raw) > MAX_DRIFT_REPORTED:
        raise RecordError(f"a snapshot carries at most {MAX_DRIFT_REPORTED} drift records")
    return tuple(McpDrift.from_map(m) for m in raw)
