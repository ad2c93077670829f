"""The audit trail: ``audit/<revision>`` keys, written in two steps so that nothing is lost.

etcd cannot name a key after the revision its own transaction creates. So a mutation writes its
target and ``audit/pending/<uuid>`` in ONE transaction (both get that transaction's revision as
their mod_revision); ``finalize`` then moves the entry to ``audit/<revision>``. A process that dies
in between leaves only a pending entry, which the next start-up or history read finalizes using
its mod_revision -- the revision of the mutation it describes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from configsvc.errors import StoreDown, WriteOutcomeUnknown
from holdfast.keyspace import AuditEntry, Keyspace, RecordError
from holdfast.keyspace.keys import KeyError_
from holdfast.logs import get_logger
from holdfast.store import CasConflict, KeyValue, Put, StoreError, TxnResult

log = get_logger(__name__)


class ConfigStore(Protocol):
    """The part of ``holdfast.store.Store`` configsvc's service uses: any Store is one."""

    async def get(self, key: str) -> KeyValue | None: ...
    async def list_prefix(self, prefix: str) -> tuple[int, list[KeyValue]]: ...
    async def txn(self, puts: Sequence[Put], deletes: Sequence[str] = ()) -> TxnResult: ...


@dataclass(frozen=True, slots=True)
class HistoryItem:
    revision: int
    entry: AuditEntry

    def to_json(self) -> dict[str, Any]:
        e = self.entry
        return {
            "revision": self.revision,
            "at": e.at,
            "actor": e.actor,
            "action": e.action,
            "target": e.target,
            "agent": e.extra.get("agent"),
            "reason": e.reason,
            "before": e.before,
            "after": e.after,
            "extra": {k: v for k, v in e.extra.items() if k != "agent"} or None,
        }


@dataclass(frozen=True, slots=True)
class PendingAudit:
    key: str
    value: bytes

    @property
    def put(self) -> Put:
        return Put(self.key, self.value)  # a fresh uuid: nothing to guard


class AuditTrail:
    def __init__(self, store: ConfigStore, keyspace: Keyspace) -> None:
        self.store = store
        self.keyspace = keyspace

    def pending(self, entry: AuditEntry) -> PendingAudit:
        """The pending entry to write in the same transaction as the mutation it describes."""
        return PendingAudit(self.keyspace.audit_pending(uuid.uuid4().hex), entry.encode())

    async def write(
        self,
        puts: Sequence[Put],
        entry: AuditEntry,
        *,
        deletes: Sequence[str] = (),
        check: str,
        retryable: tuple[type[StoreError], ...] = (CasConflict,),
    ) -> int:
        """Apply a mutation and its audit entry in one transaction, then finalize the entry.

        ``retryable`` errors pass through (the caller re-reads and decides); any other store
        failure leaves the outcome unknown, and ``check`` names what the operator reads to learn it.
        """
        pending = self.pending(entry)
        try:
            result = await self.store.txn([*puts, pending.put], deletes)
        except retryable:
            raise
        except StoreError as exc:
            raise WriteOutcomeUnknown(
                f"etcd did not confirm the change ({exc}); it was applied whole or not at all: "
                f"check {check} before retrying"
            ) from exc
        await self.finalize(pending.key, pending.value, result.revision)
        return result.revision

    async def finalize(self, pending_key: str, value: bytes, revision: int) -> bool:
        """Move one pending entry to ``audit/<revision>``; False if it must wait for later.

        Idempotent across processes: the put requires ``audit/<revision>`` to be absent and the
        delete happens in the same transaction, so a racing finalizer simply loses the CAS.
        """
        final_key = self.keyspace.audit(revision)
        try:
            await self.store.txn([Put(final_key, value, expected_mod_revision=0)], [pending_key])
        except CasConflict:
            return True  # another finalizer got there first, in one transaction with the delete
        except StoreError as exc:
            log.warning("audit_finalize_deferred", revision=revision, error=str(exc))
            return False
        log.info("audit_finalized", revision=revision)
        return True

    async def finalize_pending(self) -> int:
        """Finalize every pending entry (start-up, history reads); returns how many were moved.

        Raises StoreDown when etcd cannot be listed.
        """
        pending = await self._list(self.keyspace.kind_prefix("audit") + "pending/")
        moved = 0
        for kv in pending:
            if await self.finalize(kv.key, kv.value, kv.mod_revision):
                moved += 1
        return moved

    async def history(self, *, agent: str = "", limit: int = 50) -> tuple[int, list[HistoryItem]]:
        """The newest ``limit`` entries (of ``agent`` when given), newest first."""
        revision, items, _ = await self.search(
            lambda item: not agent or item.entry.extra.get("agent") == agent, limit=limit
        )
        return revision, items

    async def search(
        self,
        match: Callable[[HistoryItem], bool],
        *,
        before: int | None = None,
        limit: int = 50,
    ) -> tuple[int, list[HistoryItem], int | None]:
        """The newest ``limit`` entries that ``match``, below revision ``before`` when given,
        newest first; with etcd's revision and where the next page starts (None: no more)."""
        await self.finalize_pending()
        revision, kvs = await self._list_with_revision(self.keyspace.kind_prefix("audit"))
        items: list[HistoryItem] = []
        for kv in reversed(kvs):  # keys are zero-padded revisions: reverse key order = newest
            try:
                parsed = self.keyspace.parse(kv.key)
                if parsed.kind != "audit":
                    continue
                item = HistoryItem(int(parsed.parts[0]), AuditEntry.decode(kv.value))
            except (KeyError_, RecordError) as exc:
                log.warning("audit_entry_unreadable", key=kv.key, error=str(exc))
                continue
            if before is not None and item.revision >= before:
                continue
            if not match(item):
                continue
            if len(items) >= limit:
                return revision, items, items[-1].revision
            items.append(item)
        return revision, items, None

    async def _list(self, prefix: str) -> list[KeyValue]:
        return (await self._list_with_revision(prefix))[1]

    async def _list_with_revision(self, prefix: str) -> tuple[int, list[KeyValue]]:
        try:
            return await self.store.list_prefix(prefix)
        except StoreError as exc:
            raise StoreDown(f"etcd is unavailable: {exc}") from exc
