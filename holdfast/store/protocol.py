"""``Store``: the key-value store as the rest of Holdfast sees it (etcd's semantics, no etcd types).

Everything outside ``holdfast.store`` depends on this protocol; ``holdfast.store.etcd.EtcdStore``
implements it against etcd, ``holdfast.store.memory.MemoryStore`` in memory for pure unit tests.
One behavioural contract test runs against both (``tests/store_contract.py``).

Revisions: one counter for the whole store, starting at 1 and raised by one for every write
that changes something (a transaction is one write, whatever it touches). A key's
``mod_revision`` is the revision of its last change, ``create_revision`` the revision that
created it (since its last deletion), ``version`` the number of puts since then, ``lease`` the
lease it is attached to (0: none).

Errors (``holdfast.store.errors``), common to every operation:

- ``StoreUnavailable``: no endpoint answered in time, or the store is closed. For a write
  (put, delete, txn) it says whether the request was sent: "the outcome is unknown" means it
  may or may not have been applied; otherwise nothing was applied.
- ``PermissionDenied`` / ``AuthFailed``: etcd's auth refused the key or the credentials.
- ``StoreError``: anything else the store refused.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Protocol

from holdfast.store.types import Change, KeyRange, KeyValue, Put, Traffic, TxnResult


class Store(Protocol):
    """A connection to one key-value store with etcd's semantics."""

    @property
    def endpoint(self) -> str:
        """The endpoint calls go to now (a URL); it changes when the store fails over."""
        ...

    async def connect(self) -> None:
        """Check that the store answers (one ``revision()``); StoreUnavailable if it does not.

        Optional: every operation connects on demand; this only reports an outage early.
        """
        ...

    async def close(self) -> None:
        """Release the connections. Afterwards every operation raises StoreUnavailable and a
        running watch ends with StoreUnavailable."""
        ...

    async def get(self, key: str) -> KeyValue | None:
        """The key's current value, or None if it does not exist (linearizable)."""
        ...

    async def list_prefix(self, prefix: str) -> tuple[int, list[KeyValue]]:
        """Every key under ``prefix`` (``""``: all keys), sorted by key bytes, and the store's
        revision at which this consistent view was taken -- watch from that revision + 1 to
        miss nothing."""
        ...

    async def list_ranges(self, ranges: Sequence[KeyRange]) -> tuple[int, list[list[KeyValue]]]:
        """Every key of each range (one list per range, in order, each sorted by key bytes),
        all read at one revision, returned with it: a consistent view of several ranges, to
        watch each from that revision + 1. At most ``MAX_RANGES_PER_READ`` ranges (ValueError)."""
        ...

    async def revision(self) -> int:
        """The store's current revision. Needs a working cluster (a leader), so it doubles as
        the liveness probe."""
        ...

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Write ``key`` unconditionally; returns the new revision (always a new one, even for
        an unchanged value). ``lease`` attaches the key to that lease (0 detaches it); an
        unknown or expired lease raises LeaseNotFound and writes nothing."""
        ...

    async def delete(self, key: str) -> int:
        """Delete ``key``; returns the new revision, or the current one if there was no such key
        (deleting nothing makes no revision)."""
        ...

    async def txn(self, puts: Sequence[Put], deletes: Sequence[str] = ()) -> TxnResult:
        """Compare-and-swap: apply every put and delete at one revision, or nothing.

        A put with ``expected_mod_revision`` set is guarded: it requires the key's current
        ``mod_revision`` to equal it (0: the key must not exist); ``None`` is unconditional.
        If any guard fails, nothing is written and CasConflict names the first failing key
        (in ``puts`` order) with the expected and actual mod revisions (0: missing). A put
        naming an unknown lease raises LeaseNotFound and writes nothing. A key may appear
        once in ``puts`` + ``deletes`` (ValueError otherwise, before anything is sent).

        ``TxnResult.revision`` is the transaction's revision: every key it put has that
        ``mod_revision``. A transaction that changed nothing (only deletes of missing keys)
        returns the current revision.
        """
        ...

    async def grant_lease(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds (ValueError unless positive); returns its id (never 0).

        The store may round the TTL up to its minimum. A lease expires when ``ttl`` seconds
        pass without a keepalive; then, or when revoked, every key attached to it is deleted
        in one revision.
        """
        ...

    async def keepalive_once(self, lease_id: int) -> int:
        """Refresh the lease once; returns its TTL in seconds, or 0 if it no longer exists
        (expired or revoked) -- no LeaseNotFound here."""
        ...

    async def revoke_lease(self, lease_id: int) -> None:
        """End the lease now, deleting its keys in one revision. An unknown lease is fine."""
        ...

    async def compact(self, revision: int) -> None:
        """Drop the history before ``revision``: watches from an older revision then raise
        Compacted. Compacting at or below an earlier compaction is a no-op; a revision beyond
        the current one raises StoreError."""
        ...

    @property
    def traffic(self) -> Traffic:
        """What this store received so far: response bytes, and keys per key directory."""
        ...

    def watch(
        self,
        what: str | KeyRange,
        start_revision: int,
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> AsyncGenerator[list[Change], None]:
        """Every change in ``what`` (a ``KeyRange``; a string is a prefix) from
        ``start_revision`` on (history first, then live), one list per revision, in revision
        order; a transaction's changes arrive together.

        Watches of one store share one stream to the store (etcd: one gRPC Watch stream per
        endpoint connection, each watch a watch id on it), so a process may watch many exact
        ranges for the cost of one connection. Each watch is ordered in itself; no order is
        promised between two watches (a watch catching up on history may deliver an older
        revision after another watch delivered a newer one).

        ``on_progress(revision)`` is called once the watch is established (with the store's
        revision then) and on each progress notification, so an idle watch shows it is alive.
        The generator runs until the caller stops it (close it, ``contextlib.aclosing``);
        it raises Compacted(compact_revision) if ``start_revision`` is older than the last
        compaction -- re-list and watch again -- and StoreUnavailable when the stream breaks;
        resume with a new watch from the last revision seen + 1.
        """
        ...
