"""Provider host names to addresses, every answer checked against the host policy.

What ``holdfast.net.resolver.GuardedResolver`` does for aiohttp, for this client: the name is
checked before the lookup, each address after it (a name that rebinds to a metadata or
link-local address is refused at connect time), and when none is left the lookup fails with
``AddressRefused`` whose reason the caller reports. Answers that passed are kept ``ttl`` seconds
(aiohttp's ``ttl_dns_cache`` for the same client was 60); concurrent lookups of one name share
one query. IP literals never get here: the caller checks URLs with ``HostPolicy.check_url``.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Final

from holdfast.logs import get_logger
from holdfast.net.guard import AddressRefused, HostPolicy, HostRefused

log = get_logger(__name__)

DEFAULT_TTL: Final = 60.0
MAX_CACHED: Final = 1024

Address = tuple[socket.AddressFamily, str]


class GuardedDns:
    def __init__(self, policy: HostPolicy, *, ttl: float = DEFAULT_TTL) -> None:
        self.policy = policy
        self.ttl = ttl
        self._cache: dict[tuple[str, int], tuple[float, list[Address]]] = {}
        self._pending: dict[tuple[str, int], asyncio.Task[list[Address]]] = {}

    async def resolve(self, host: str, port: int) -> list[Address]:
        loop = asyncio.get_running_loop()
        key = (host, port)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > loop.time():
            return hit[1]
        lookup = self._pending.get(key)
        if lookup is None:
            # A task of its own, so that a caller that gives up does not cancel the others.
            lookup = self._pending[key] = loop.create_task(self._lookup(loop, host, port))
            lookup.add_done_callback(lambda done: self._settle(key, done))
        return await asyncio.shield(lookup)

    def _settle(self, key: tuple[str, int], done: asyncio.Task[list[Address]]) -> None:
        del self._pending[key]
        if done.cancelled() or done.exception() is not None:
            return  # failures are not cached: the next call asks again
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[key] = (asyncio.get_running_loop().time() + self.ttl, done.result())

    async def _lookup(self, loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[Address]:
        try:
            self.policy.check_host(host)
        except HostRefused as exc:
            raise AddressRefused(str(exc)) from exc
        kept: list[Address] = []
        refused = ""
        for family, address in await self.query(loop, host, port):
            try:
                self.policy.check_address(host, address)
            except HostRefused as exc:
                refused = str(exc)
                continue
            if (family, address) not in kept:
                kept.append((family, address))
        if not kept:
            log.warning("upstream_address_refused", host=host[:120], reason=refused)
            raise AddressRefused(refused or f"{host!r:.80} resolved to no address")
        return kept

    @staticmethod
    async def query(loop: asyncio.AbstractEventLoop, host: str, port: int) -> list[Address]:
        """The system resolver's answers (tests put a rebinding DNS here)."""
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        return [(family, str(sockaddr[0])) for family, _t, _p, _n, sockaddr in infos]

    def close(self) -> None:
        for lookup in self._pending.values():
            lookup.cancel()
        self._cache.clear()
