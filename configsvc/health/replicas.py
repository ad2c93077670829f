"""configsvc's replicas as one health service: each registers in ``members/`` and holds the health
of the agents it owns.

A replica writes its ``Member`` record (where sidecars and the other replicas reach it) under a
lease of its own and follows every replica's record through a watch. From the same members every
replica and every sidecar computes the same owners of an agent (``holdfast.health_owners``): the
agent's sidecars send their beats there, and there the agent's health can be read and judged.
A replica whose lease lapsed (cut off from etcd) registers again on the next lease.

With no member known (a replica that has not registered yet, or a test without membership) a
replica treats every agent as its own: that is the single-replica case, where it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from holdfast.health_owners import owners
from holdfast.keyspace import Keyspace, RecordError
from holdfast.keyspace.member import Member
from holdfast.logs import get_logger
from holdfast.store import Store, StoreError
from holdfast.store.lease import LeaseKeeper
from holdfast.store.mirror import MirrorUpdate, PrefixMirror

log = get_logger(__name__)

MIN_TTL_S: Final = 2


class ReplicaSet:
    def __init__(
        self,
        store: Store,
        keyspace: Keyspace,
        *,
        replica: str,
        ttl: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.keyspace = keyspace
        self.replica = replica
        self.url = ""  # known once the listener is bound (start)
        self._prefix = keyspace.kind_prefix("members")
        self._clock = clock
        self._started_at = clock()
        self._lease = LeaseKeeper(store, max(MIN_TTL_S, ttl), on_new_lease=self._register)
        self._mirror = PrefixMirror(store, self._prefix)
        self._mirror.subscribe(self._on_update)
        self._members: dict[str, Member] = {}

    async def start(self, url: str) -> None:
        """Register at ``url`` (this replica's API as others reach it) and follow the others."""
        self.url = Member(replica=self.replica, url=url, started_at=self._started_at).url
        await self._mirror.start()
        await self._lease.start()  # returns at once with etcd down; registers when it is back

    async def close(self) -> None:
        """Leave: revoking the lease removes this replica's record at once."""
        await self._lease.close(revoke=True)
        await self._mirror.close()

    async def _register(self, lease_id: int) -> None:
        member = Member(replica=self.replica, url=self.url, started_at=self._started_at)
        try:
            await self.store.put(
                self.keyspace.member(self.replica), member.encode(), lease=lease_id
            )
        except StoreError as exc:  # the keeper grants a new lease and calls again
            log.warning("replica_register_failed", replica=self.replica, error=str(exc))
            return
        log.info("replica_registered", replica=self.replica, url=self.url, lease_id=lease_id)

    def _on_update(self, update: MirrorUpdate) -> None:
        members: dict[str, Member] = {}
        for key, kv in update.kvs.items():
            try:
                member = Member.decode(kv.value)
            except RecordError as exc:
                log.warning("member_record_unreadable", key=key, error=str(exc))
                continue
            if key == self._prefix + member.replica:
                members[member.replica] = member
        if set(members) != set(self._members):
            log.info("replicas_changed", replicas=sorted(members))
        self._members = members

    @property
    def members(self) -> dict[str, Member]:
        return dict(self._members)

    def owners(self, agent: str) -> list[Member]:
        """The agent's owner replicas, first owner first; empty when no member is known."""
        return [self._members[r] for r in owners(agent, self._members)]

    def holds(self, agent: str) -> bool:
        """True when this replica receives the agent's beats (or no membership is known)."""
        found = self.owners(agent)
        return not found or any(m.replica == self.replica for m in found)

    def first_owner(self, agent: str) -> str:
        """The id of the replica whose judgement of the agent's rollouts counts ("": none)."""
        found = self.owners(agent)
        return found[0].replica if found else ""
