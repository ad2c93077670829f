"""Idle keep-alive connections per (scheme, host, port): which one a call may take, and when
one expires. Pure bookkeeping over anything ``Pooled``; the client does the I/O."""

from __future__ import annotations

import math
from typing import Final, Generic, Protocol, TypeVar

from sidecar.upstream.h1.framing import expired

# aiohttp's keepalive_timeout for the same client; providers keep idle connections longer.
DEFAULT_KEEPALIVE: Final = 15.0
# No limit on connections in use (as with aiohttp's limit=0); idle ones beyond this per host
# are closed rather than kept.
DEFAULT_MAX_IDLE: Final = 1024

Key = tuple[str, str, int]


class Pooled(Protocol):
    idle_since: float

    def usable(self) -> bool:
        """Still open, and nothing arrived on it while it was idle."""


P = TypeVar("P", bound=Pooled)


class IdlePool(Generic[P]):
    def __init__(
        self, *, keepalive: float = DEFAULT_KEEPALIVE, max_idle: int = DEFAULT_MAX_IDLE
    ) -> None:
        self.keepalive = keepalive
        self.max_idle = max_idle
        self._idle: dict[Key, list[P]] = {}
        self.stale: list[P] = []  # taken out by ``take``, to be closed

    def __len__(self) -> int:
        return sum(len(conns) for conns in self._idle.values())

    def idle(self, key: Key) -> list[P]:
        """The idle connections of ``key`` (a copy; oldest first)."""
        return list(self._idle.get(key, ()))

    def put(self, key: Key, conn: P, now: float) -> bool:
        """Keep ``conn`` for a later call; False when it must be closed instead."""
        conns = self._idle.setdefault(key, [])
        if len(conns) >= self.max_idle:
            return False
        conn.idle_since = now
        conns.append(conn)
        return True

    def take(self, key: Key, now: float) -> P | None:
        """The most recently used live connection for ``key`` (fewer stay warm, the rest
        expire). Stale ones found on the way are moved to ``stale`` for the caller to close."""
        conns = self._idle.get(key)
        while conns:
            conn = conns.pop()
            if conn.usable() and not expired(conn.idle_since, now, self.keepalive):
                return conn
            self.stale.append(conn)
        return None

    def expire(self, now: float) -> tuple[list[P], float]:
        """Remove what expired or died; returns it and when the next one expires (inf: none)."""
        gone: list[P] = []
        following = math.inf
        for key in list(self._idle):
            kept: list[P] = []
            for conn in self._idle[key]:
                if conn.usable() and not expired(conn.idle_since, now, self.keepalive):
                    kept.append(conn)
                    following = min(following, conn.idle_since + self.keepalive)
                else:
                    gone.append(conn)
            if kept:
                self._idle[key] = kept
            else:
                del self._idle[key]
        return gone, following

    def drain(self) -> list[P]:
        conns = [conn for conns in self._idle.values() for conn in conns]
        self._idle.clear()
        return conns
