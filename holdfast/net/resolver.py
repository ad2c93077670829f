"""An aiohttp resolver that checks every DNS answer against a ``HostPolicy`` at connect time.

A release or contract is admitted by its host name; the name may later resolve (or rebind) to
a metadata or link-local address. The connector asks this resolver, so the addresses it dials
are the ones checked here. IP literals never reach a resolver: callers check URLs with
``HostPolicy.check_url`` before each call (``guarded_connector`` users do).
"""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from holdfast.logs import get_logger
from holdfast.net.guard import AddressRefused, HostPolicy, HostRefused, refused_reason

log = get_logger(__name__)

__all__ = ["AddressRefused", "GuardedResolver", "guarded_connector", "refused_reason"]


class GuardedResolver(AbstractResolver):
    def __init__(self, policy: HostPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner if inner is not None else aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            self.policy.check_host(host)
        except HostRefused as exc:
            raise AddressRefused(str(exc)) from exc
        answers = await self._inner.resolve(host, port, family)
        kept: list[ResolveResult] = []
        refused = ""
        for answer in answers:
            try:
                self.policy.check_address(host, answer["host"])
            except HostRefused as exc:
                refused = str(exc)
                continue
            kept.append(answer)
        if not kept:
            log.warning("upstream_address_refused", host=host[:120], reason=refused)
            raise AddressRefused(refused or f"{host!r:.80} resolved to no address")
        return kept

    async def close(self) -> None:
        await self._inner.close()


def guarded_connector(policy: HostPolicy, **kwargs: Any) -> aiohttp.TCPConnector:
    """A TCPConnector whose DNS answers pass ``policy``."""
    return aiohttp.TCPConnector(resolver=GuardedResolver(policy), **kwargs)
