"""``MemoryStore``: the ``Store`` protocol in memory, for pure unit tests.

Faithful to etcd where the rest of Holdfast can tell: one revision counter for all keys,
create/mod revisions and versions, transactions as compare-and-swap at one revision, leases whose
keys go when they expire or are revoked, watches that replay history from a revision and raise
Compacted once it was compacted away. ``tests/store_contract.py`` runs the same cases against it
and a real etcd so the two cannot drift apart.

Time is an injectable clock (seconds, like ``time.monotonic``); expired leases are reaped at the
start of every operation, or by ``expire_leases()``. ``unavailable = True`` simulates an outage:
every operation raises StoreUnavailable without applying anything and running watches break.
The state lives in plain synchronous methods; the async ones only add the protocol's shape.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field

from holdfast.store.errors import (
    CasConflict,
    Compacted,
    LeaseNotFound,
    StoreError,
    StoreUnavailable,
)
from holdfast.store.protocol import Store
from holdfast.store.types import (
    MAX_RANGES_PER_READ,
    Change,
    KeyRange,
    KeyValue,
    Put,
    Traffic,
    TxnResult,
    as_range,
    kv_from_change,
)

ENDPOINT = "memory://"


def _key_bytes(key: str) -> bytes:
    # etcd orders keys by their bytes; surrogateescape as in holdfast.store.etcd_wire.
    return key.encode("utf-8", "surrogateescape")


@dataclass(slots=True)
class _Lease:
    ttl: int
    expires_at: float
    keys: set[str] = field(default_factory=set)


class MemoryStore:
    """An in-memory store with etcd's semantics (see ``holdfast.store.protocol.Store``)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._revision = 1  # a fresh etcd cluster is at revision 1
        self._kvs: dict[str, KeyValue] = {}
        self._history: list[list[Change]] = []  # one entry per revision > 1, oldest first
        self._compacted = 0
        self._leases: dict[int, _Lease] = {}
        self._lease_ids = itertools.count(0x2F00_0000_0001)  # like etcd's: large, never 0
        self._wakeups: set[asyncio.Event] = set()
        self._unavailable = False
        self._closed = False
        self._traffic = Traffic()

    # -- simulation controls -------------------------------------------------------------

    @property
    def unavailable(self) -> bool:
        return self._unavailable

    @unavailable.setter
    def unavailable(self, down: bool) -> None:
        """True: every call raises StoreUnavailable (nothing applied), running watches break."""
        self._unavailable = down
        self._wake()

    def expire_leases(self) -> list[int]:
        """Revoke every lease whose TTL has run out by the clock; returns their ids."""
        now = self._clock()
        expired = sorted(
            (lease.expires_at, lease_id)
            for lease_id, lease in self._leases.items()
            if lease.expires_at <= now
        )
        for _, lease_id in expired:
            self._revoke(lease_id)
        return [lease_id for _, lease_id in expired]

    # -- the protocol ---------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return ENDPOINT

    @property
    def traffic(self) -> Traffic:
        return self._traffic

    async def connect(self) -> None:
        self._check("connect")

    async def close(self) -> None:
        self._closed = True
        self._wake()

    async def get(self, key: str) -> KeyValue | None:
        self._check(f"get {key}")
        found = self._listed(KeyRange.exact(key))
        return found[0] if found else None

    async def list_prefix(self, prefix: str) -> tuple[int, list[KeyValue]]:
        self._check(f"list {prefix}")
        return self._revision, self._listed(KeyRange.prefix(prefix))

    async def list_ranges(self, ranges: Sequence[KeyRange]) -> tuple[int, list[list[KeyValue]]]:
        if len(ranges) > MAX_RANGES_PER_READ:
            raise ValueError(f"at most {MAX_RANGES_PER_READ} ranges in one read, not {len(ranges)}")
        self._check(f"list {len(ranges)} range(s)")
        return self._revision, [self._listed(r) for r in ranges]

    def _listed(self, rng: KeyRange) -> list[KeyValue]:
        if not rng.is_prefix:
            found = [self._kvs[rng.key]] if rng.key in self._kvs else []
        else:
            start = _key_bytes(rng.key)
            keys = sorted((k for k in self._kvs if _key_bytes(k).startswith(start)), key=_key_bytes)
            found = [self._kvs[k] for k in keys]
        for kv in found:
            self._traffic.key(kv.key, len(kv.value))
        return found

    async def revision(self) -> int:
        self._check("revision")
        return self._revision

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        self._check(f"put {key}")
        self._require_leases([lease])
        self._commit([self._put_change(key, value, lease)])
        return self._revision

    async def delete(self, key: str) -> int:
        self._check(f"delete {key}")
        if key in self._kvs:
            self._commit([Change("delete", key, b"", self._revision + 1)])
        return self._revision

    async def txn(self, puts: Sequence[Put], deletes: Sequence[str] = ()) -> TxnResult:
        twice = [k for k, n in Counter([p.key for p in puts] + list(deletes)).items() if n > 1]
        if twice:
            raise ValueError(f"a txn may touch each key once; these appear twice: {twice}")
        self._check(f"txn on {len(puts) + len(deletes)} key(s)")
        for p in puts:
            if p.expected_mod_revision is None:
                continue
            current = self._kvs.get(p.key)
            actual = current.mod_revision if current is not None else 0
            if actual != p.expected_mod_revision:
                raise CasConflict(p.key, p.expected_mod_revision, actual)
        self._require_leases([p.lease for p in puts])
        changes = [self._put_change(p.key, p.value, p.lease) for p in puts]
        changes += [
            Change("delete", key, b"", self._revision + 1) for key in deletes if key in self._kvs
        ]
        if changes:
            self._commit(changes)
        return TxnResult(revision=self._revision)

    async def grant_lease(self, ttl: int) -> int:
        if ttl <= 0:
            raise ValueError(f"lease TTL must be positive, got {ttl}")
        self._check("grant lease")
        lease_id = next(self._lease_ids)
        self._leases[lease_id] = _Lease(ttl, self._clock() + ttl)
        return lease_id

    async def keepalive_once(self, lease_id: int) -> int:
        self._check(f"keepalive lease {lease_id}")
        lease = self._leases.get(lease_id)
        if lease is None:
            return 0
        lease.expires_at = self._clock() + lease.ttl
        return lease.ttl

    async def revoke_lease(self, lease_id: int) -> None:
        self._check(f"revoke lease {lease_id}")
        if lease_id in self._leases:
            self._revoke(lease_id)

    async def compact(self, revision: int) -> None:
        self._check(f"compact {revision}")
        if revision > self._revision:
            raise StoreError(f"compact {revision}: required revision is a future revision")
        if revision <= self._compacted:
            return
        self._compacted = revision
        self._history = self._since(revision)  # the compacted revision itself stays watchable

    async def watch(
        self,
        what: str | KeyRange,
        start_revision: int,
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> AsyncGenerator[list[Change], None]:
        rng = as_range(what)
        label = f"watch {rng}"
        self._check(label)
        # etcd's watch from revision 0 (or below) starts after the current revision.
        next_revision = start_revision if start_revision > 0 else self._revision + 1
        wakeup = asyncio.Event()
        self._wakeups.add(wakeup)
        try:
            if on_progress is not None:
                on_progress(self._revision)
            while True:
                self._check(label, broken=True)
                # Checked before every batch: a watch that lags behind a compaction ends.
                if next_revision < self._compacted:
                    raise Compacted(self._compacted)
                if next_revision > self._revision:
                    wakeup.clear()
                    await wakeup.wait()
                    continue
                pending = self._since(next_revision)
                if not pending:  # revision 1, the empty store's, has no changes
                    next_revision = self._revision + 1
                    continue
                batch = pending[0]
                next_revision = batch[0].mod_revision + 1
                mine = [c for c in batch if rng.contains(c.key)]
                if mine:
                    for change in mine:
                        self._traffic.key(change.key, len(change.value))
                    yield mine
        finally:
            self._wakeups.discard(wakeup)

    # -- internals ----------------------------------------------------------------------------

    def _check(self, what: str, *, broken: bool = False) -> None:
        if self._closed:
            raise StoreUnavailable(f"{what}: the store is closed")
        if self._unavailable:
            state = "stream broke" if broken else "no endpoint answered"
            raise StoreUnavailable(f"{what}: {state} (memory store: simulated outage)")
        self.expire_leases()

    def _require_leases(self, leases: Sequence[int]) -> None:
        for lease in leases:
            if lease and lease not in self._leases:
                raise LeaseNotFound(f"requested lease not found: {lease}")

    def _put_change(self, key: str, value: bytes, lease: int) -> Change:
        old = self._kvs.get(key)
        revision = self._revision + 1
        create = old.create_revision if old is not None else revision
        version = old.version + 1 if old is not None else 1
        return Change("put", key, value, revision, create, version, lease)

    def _commit(self, changes: list[Change]) -> None:
        """Apply the changes of one new revision and wake the watches."""
        self._revision += 1
        for change in changes:
            old = self._kvs.get(change.key)
            if old is not None and old.lease in self._leases:
                self._leases[old.lease].keys.discard(change.key)
            if change.kind == "delete":
                del self._kvs[change.key]
                continue
            self._kvs[change.key] = kv_from_change(change)
            if change.lease:
                self._leases[change.lease].keys.add(change.key)
        self._history.append(changes)
        self._wake()

    def _revoke(self, lease_id: int) -> None:
        lease = self._leases.pop(lease_id)
        keys = sorted((k for k in lease.keys if k in self._kvs), key=_key_bytes)
        if keys:
            self._commit([Change("delete", k, b"", self._revision + 1) for k in keys])

    def _since(self, revision: int) -> list[list[Change]]:
        start = bisect.bisect_left(self._history, revision, key=lambda batch: batch[0].mod_revision)
        return self._history[start:]

    def _wake(self) -> None:
        for wakeup in self._wakeups:
            wakeup.set()


_CONFORMS: type[Store] = MemoryStore  # mypy checks the class against the protocol
