"""Live updates: a version per agent that moves when its route changes (the route watch, at
once) or its health is sampled (every tick), and the viewers waiting for it.

One event wakes every waiting viewer; what each is sent is rendered once per version and
shared (``Fragments``), so a hundred viewers of a rollout cost one render, and none of them
makes configsvc ask etcd anything.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Final

OVERVIEW: Final = "*"  # the topic that moves with every change of any agent
MAX_VIEWERS: Final = 256  # live pages at once, per configsvc process


class Feed:
    def __init__(self, *, max_viewers: int = MAX_VIEWERS) -> None:
        self.version = 0
        self.max_viewers = max_viewers
        self.viewers = 0
        self.closed = False
        self._changed: dict[str, int] = {}
        self._wake = asyncio.Event()

    def changed(self, topic: str) -> int:
        """The version of ``topic``'s last change (0: none yet)."""
        return self._changed.get(topic, 0)

    def bump(self, agents: Iterable[str]) -> None:
        self.version += 1
        for agent in agents:
            self._changed[agent] = self.version
        self._changed[OVERVIEW] = self.version
        self._wake.set()
        self._wake = asyncio.Event()

    def close(self) -> None:
        """Shutting down: every viewer's stream ends."""
        self.closed = True
        self._wake.set()

    async def wait(self, topic: str, seen: int, keepalive: float) -> int | None:
        """The version once ``topic`` moved past ``seen``; None after ``keepalive`` seconds
        without a change (or once the feed is closed)."""
        deadline = asyncio.get_running_loop().time() + keepalive
        while not self.closed:
            version = self.changed(topic)
            if version > seen:
                return version
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return None
            wake = self._wake
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), remaining)
        return None
