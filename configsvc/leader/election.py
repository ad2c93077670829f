"""Leader election through etcd: the holder of ``election/<name>`` (under its lease) leads.

Acquire = create the key only if absent, attached to our lease. Keep = renew the lease every
ttl/3. Leadership is claimed only while the last renewal is younger than ttl/2, so a replica
cut off from etcd stops acting before its lease can expire and another one takes over. Work
done as leader is still guarded by compare-and-swap on its own keys: leadership is an
optimisation against duplicate effort, never the only thing that keeps state consistent.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from typing import Final

from holdfast.background import BackgroundTask
from holdfast.keyspace import Keyspace
from holdfast.logs import get_logger
from holdfast.store import CasConflict, Put, Store, StoreError

log = get_logger(__name__)

ROLLOUT_ELECTION: Final = "rollout-controller"


def default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"[:128]


class Election:
    def __init__(
        self, store: Store, keyspace: Keyspace, name: str, *, ttl: int, identity: str = ""
    ) -> None:
        self.store = store
        self.key = keyspace.election(name)
        self.ttl = ttl
        self.identity = identity or default_identity()
        self._lease = 0
        self._holder = False
        self._renewed_at = float("-inf")
        self._task = BackgroundTask(f"election {self.key}")
        self.changes = 0

    @property
    def is_leader(self) -> bool:
        return self._holder and time.monotonic() - self._renewed_at < self.ttl / 2

    async def leader(self) -> str | None:
        """Who leads now, as etcd says (None: nobody); raises StoreError when etcd is down."""
        kv = await self.store.get(self.key)
        return kv.value.decode(errors="replace") if kv is not None else None

    def start(self) -> None:
        self._task.start(self._run)

    async def close(self) -> None:
        await self._task.cancel()
        if self._lease:
            try:  # revoking deletes the key at once: a successor need not wait out the TTL
                await self.store.revoke_lease(self._lease)
            except StoreError as exc:
                log.warning("leader_resign_failed", key=self.key, error=str(exc))
        self._set_holder(False)
        self._lease = 0

    async def _run(self) -> None:
        while True:
            try:
                await self._round()
            except StoreError as exc:
                log.warning("leader_round_failed", key=self.key, error=str(exc))
            await asyncio.sleep(self.ttl / 3)

    async def _round(self) -> None:
        if self._lease and await self.store.keepalive_once(self._lease) == 0:
            log.warning("leader_lease_expired", key=self.key, lease_id=self._lease)
            self._lease = 0
            self._set_holder(False)
        if not self._lease:
            self._lease = await self.store.grant_lease(self.ttl)
        self._renewed_at = time.monotonic()
        kv = await self.store.get(self.key)
        if kv is None:
            try:
                await self.store.txn(
                    [
                        Put(
                            self.key,
                            self.identity.encode(),
                            expected_mod_revision=0,
                            lease=self._lease,
                        )
                    ]
                )
            except CasConflict:
                self._set_holder(False)
                return
            self._set_holder(True)
            return
        self._set_holder(kv.lease == self._lease)

    def _set_holder(self, holder: bool) -> None:
        if holder != self._holder:
            self.changes += 1
            log.info(
                "leader_elected" if holder else "leader_lost", key=self.key, identity=self.identity
            )
        self._holder = holder
