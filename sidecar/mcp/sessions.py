"""MCP sessions of the handshake era, pure: the state machine, the book, ownership.

A session opens with ``initialize`` (``initializing``), is ``ready`` once the client says
``notifications/initialized`` (requests are served in between too, as the reference servers
do), and ends ``closed`` by DELETE or by idling out. Its id is minted here from the CSPRNG and
names its tool set, so a sidecar that never saw the session (another replica, a restart) can
revive it from the session's pin in etcd without a guess ever matching someone else's session.
An id minted for an ``X-Holdfast-Session`` also carries a digest of it, so a sidecar reviving
the session knows whose it is: presented under another ``X-Holdfast-Session`` it is refused
there as on the sidecar that opened it (the digest is no secret; the random part is).

A session is pinned under its **pin key**: the agent's ``X-Holdfast-Session`` when it sent one
at ``initialize`` (one pin for the agent's conversation, whatever it reaches), else the MCP
session id itself. A request that names the session with another ``X-Holdfast-Session`` is
refused: that session belongs to someone else.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from holdfast.keyspace.keys import ID_RE

State = Literal["initializing", "ready", "closed"]
PREFIX: Final = "mcp."
TOKEN_BYTES: Final = 16
OWNER_DIGEST_CHARS: Final = 16
DEFAULT_MAX_SESSIONS: Final = 10_000
DEFAULT_IDLE_S: Final = 3600.0
_HEX: Final = re.compile(r"[0-9a-f]+")
_NEXT: Final[dict[State, frozenset[State]]] = {
    "initializing": frozenset({"ready", "closed"}),
    "ready": frozenset({"closed"}),
    "closed": frozenset(),
}


class SessionProblem(Exception):
    """Why a request cannot use the session it names; ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(slots=True)
class McpSession:
    id: str
    toolset: str
    version: str
    pin_key: str
    owner: str | None  # the X-Holdfast-Session it was opened with
    last_seen: float
    state: State = "initializing"
    client_info: dict[str, Any] = field(default_factory=dict)

    def move(self, to: State) -> None:
        if to == self.state:
            return
        if to not in _NEXT[self.state]:
            raise SessionProblem(400, f"an MCP session cannot go from {self.state} to {to}")
        self.state = to


def owner_digest(owner: str) -> str:
    return hashlib.sha256(owner.encode()).hexdigest()[:OWNER_DIGEST_CHARS]


def mint(toolset: str, owner: str | None = None) -> str:
    token = secrets.token_hex(TOKEN_BYTES)
    if owner is not None:
        token = f"{token}-{owner_digest(owner)}"
    return f"{PREFIX}{toolset}.{token}"


def _split(session_id: str) -> tuple[str, str | None] | None:
    """``(tool set, owner digest or None)`` of a minted id; None for any other string."""
    if not session_id.startswith(PREFIX) or not ID_RE.fullmatch(session_id):
        return None
    toolset, _, token = session_id[len(PREFIX) :].rpartition(".")
    random, _, digest = token.partition("-")
    if not toolset or len(random) != 2 * TOKEN_BYTES or not _HEX.fullmatch(random):
        return None
    if digest and (len(digest) != OWNER_DIGEST_CHARS or not _HEX.fullmatch(digest)):
        return None
    return toolset, digest or None


def toolset_of(session_id: str) -> str | None:
    """The tool set a minted id names; None for an id this sidecar never minted."""
    found = _split(session_id)
    return found[0] if found is not None else None


def owned_by(session_id: str, owner: str | None) -> bool:
    """Whether a request under ``owner`` (its X-Holdfast-Session, None: none) may revive the
    minted session ``session_id``: the one it was opened for, or no one for an id opened
    without one (that id is its own pin key, which must exist: the caller checks)."""
    found = _split(session_id)
    if found is None:
        return False
    digest = found[1]
    if digest is None or owner is None:
        return digest is None and owner is None
    return secrets.compare_digest(digest, owner_digest(owner))


def not_owned(*, opened_without: bool) -> SessionProblem:
    if opened_without:
        text = "this MCP session was opened without X-Holdfast-Session; send none, or open your own"
    else:
        text = (
            "this MCP session belongs to another X-Holdfast-Session (send the one it was "
            "opened with, or open your own)"
        )
    return SessionProblem(403, text)


class SessionBook:
    def __init__(
        self, *, max_sessions: int = DEFAULT_MAX_SESSIONS, idle_s: float = DEFAULT_IDLE_S
    ) -> None:
        self._sessions: dict[str, McpSession] = {}
        self.max_sessions = max_sessions
        self.idle_s = idle_s
        self.opened = 0
        self.revived = 0
        self.expired = 0
        self.refused = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def open(
        self, toolset: str, version: str, owner: str | None, now: float, *,
        session_id: str | None = None,
    ) -> McpSession:  # fmt: skip
        self.expire(now)
        if len(self._sessions) >= self.max_sessions:
            oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
            del self._sessions[oldest.id]
            self.expired += 1
        ident = session_id or mint(toolset, owner)
        session = McpSession(ident, toolset, version, owner or ident, owner, now)
        self._sessions[ident] = session
        if session_id is None:
            self.opened += 1
        else:
            self.revived += 1
        return session

    def find(
        self, session_id: str, toolset: str, owner: str | None, now: float
    ) -> McpSession | None:
        """The live session a request names; None when this sidecar does not hold it (the
        caller may revive it from its pin); SessionProblem when the request may not use it."""
        session = self._sessions.get(session_id)
        if session is not None and now - session.last_seen > self.idle_s:
            del self._sessions[session_id]
            self.expired += 1
            session = None
        if session is None:
            if toolset_of(session_id) != toolset:
                raise SessionProblem(404, "no such MCP session here; initialize a new one")
            return None
        if session.toolset != toolset:
            raise SessionProblem(404, "no such MCP session on this tool set")
        if owner != session.owner:
            self.refused += 1
            raise not_owned(opened_without=session.owner is None)
        session.last_seen = now
        return session

    def check_revival(self, session_id: str, toolset: str, owner: str | None) -> None:
        """SessionProblem unless a request under ``owner`` may revive ``session_id``, a minted
        session this sidecar does not hold: the id names this tool set and that owner. Whether
        the session exists (its pin) is the caller's to check."""
        found = _split(session_id)
        if found is None or found[0] != toolset:
            raise SessionProblem(404, "no such MCP session on this tool set")
        if not owned_by(session_id, owner):
            self.refused += 1
            raise not_owned(opened_without=found[1] is None)

    def close(self, session_id: str) -> McpSession | None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            session.move("closed")
        return session

    def expire(self, now: float) -> list[McpSession]:
        stale = [s for s in self._sessions.values() if now - s.last_seen > self.idle_s]
        for session in stale:
            del self._sessions[session.id]
            session.state = "closed"
        self.expired += len(stale)
        return stale

    def sessions(self) -> list[McpSession]:
        return list(self._sessions.values())

    def status(self) -> dict[str, Any]:
        return {
            "sessions": len(self._sessions),
            "opened": self.opened,
            "revived": self.revived,
            "expired": self.expired,
            "refused_not_owner": self.refused,
        }
