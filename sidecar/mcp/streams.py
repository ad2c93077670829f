"""Notification streams to agents: the handshake era's GET stream of a session and the modern
era's ``subscriptions/listen`` streams, keyed by the pin they follow.

When an operator migrates a pin (``holdfastctl pins migrate``) the pin table's watch delivers
the new release and every stream of that pin gets ``notifications/tools/list_changed`` (and
``prompts/list_changed``), so the client lists again and sees its new release's tools without
reconnecting. Streams of requests without a pin (modern clients without
``X-Holdfast-Session``) follow the route's stable release instead.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Final

from holdfast.mcp import versions, wire

UNPINNED: Final = ""
MAX_QUEUED: Final = 64
LIST_CHANGED: Final = {
    "tools": "notifications/tools/list_changed",
    "prompts": "notifications/prompts/list_changed",
}


@dataclass(eq=False, slots=True)
class Stream:
    key: str  # the pin key, or UNPINNED
    release: str  # the release the client last saw through this stream
    kinds: frozenset[str]  # "tools", "prompts"
    subscription: wire.RequestId | None = None  # modern: the subscriptions/listen request id
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(MAX_QUEUED))

    def message(self, kind: str) -> dict[str, Any]:
        if self.subscription is None:
            return wire.notification(LIST_CHANGED[kind])
        meta = {versions.SUBSCRIPTION_ID_META: self.subscription}
        return wire.notification(LIST_CHANGED[kind], {"_meta": meta})


class Streams:
    def __init__(self) -> None:
        self._by_key: dict[str, set[Stream]] = {}
        self.sent = 0

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_key.values())

    def add(self, stream: Stream) -> None:
        self._by_key.setdefault(stream.key, set()).add(stream)

    def remove(self, stream: Stream) -> None:
        found = self._by_key.get(stream.key)
        if found is not None:
            found.discard(stream)
            if not found:
                del self._by_key[stream.key]

    def watching(self, key: str) -> bool:
        return key in self._by_key

    def release_changed(self, key: str, release: str) -> list[str]:
        """The streams of ``key`` learn that it is served by ``release`` now: each one that saw
        another release is told its lists changed. Returns the methods sent."""
        sent: list[str] = []
        for stream in tuple(self._by_key.get(key, ())):
            if stream.release == release:
                continue
            stream.release = release
            for kind in sorted(stream.kinds):
                message = stream.message(kind)
                try:
                    stream.queue.put_nowait(message)
                except asyncio.QueueFull:
                    continue  # a client this far behind lists again when it catches up
                sent.append(str(message["method"]))
        self.sent += len(sent)
        return sent
