"""A lease kept alive in the background; it needs only the store's public operations."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from holdfast.background import BackgroundTask
from holdfast.logs import get_logger
from holdfast.store.errors import StoreError
from holdfast.store.protocol import Store

log = get_logger(__name__)


class LeaseKeeper:
    """A lease kept alive in the background; when it expired anyway, a new one is granted.

    ``on_new_lease`` runs for every lease granted, the first included, so the owner can
    (re)write the keys that live under it.
    """

    def __init__(
        self,
        store: Store,
        ttl: int,
        *,
        on_new_lease: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"lease TTL must be positive, got {ttl}")
        self.store = store
        self.ttl = ttl
        self.lease_id = 0
        self._on_new_lease = on_new_lease
        self._task = BackgroundTask(f"lease keeper ttl={ttl}")

    async def start(self) -> None:
        """Grant the first lease if etcd answers; otherwise the background task keeps trying."""
        if self._task.started:
            return
        with contextlib.suppress(StoreError):
            await self._grant()
        self._task.start(self._run)

    async def _grant(self) -> None:
        self.lease_id = await self.store.grant_lease(self.ttl)
        log.info("lease_granted", lease_id=self.lease_id, ttl=self.ttl)
        if self._on_new_lease is not None:
            try:
                await self._on_new_lease(self.lease_id)
            except Exception:
                log.exception("lease_callback_failed", lease_id=self.lease_id)

    async def _run(self) -> None:
        interval = max(self.ttl / 3, 0.2)
        while True:
            await asyncio.sleep(interval if self.lease_id else min(interval, 1.0))
            try:
                if not self.lease_id:
                    await self._grant()
                elif await self.store.keepalive_once(self.lease_id) == 0:
                    log.warning("lease_expired", lease_id=self.lease_id)
                    self.lease_id = 0
                    await self._grant()
            except StoreError as exc:
                log.warning("lease_keepalive_failed", lease_id=self.lease_id, error=str(exc))

    async def close(self, *, revoke: bool = True) -> None:
        await self._task.cancel()
        if revoke and self.lease_id:
            try:
                await self.store.revoke_lease(self.lease_id)
            except StoreError as exc:
                log.warning("lease_revoke_failed", lease_id=self.lease_id, error=str(exc))
        self.lease_id = 0
