"""The etcd adapter: the one module that talks to etcd, through aetcd's gRPC stubs.

Endpoint failover comes from ``holdfast.store.failover``, channels and TLS from
``holdfast.store.grpc_channel``, error translation from ``holdfast.store.grpc_errors``, message
conversion from ``holdfast.store.etcd_wire`` and the sharing of one Watch stream by many watches
from ``holdfast.store.watch_mux``; none of them imports aetcd. Watches drive the raw gRPC stream
so that each revision arrives as one batch and a member that lost its leader cancels the stream
(``hasleader`` metadata, as Go's clientv3.WithRequireLeader) instead of going silent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from typing import Any, Final

import grpc
from aetcd import rpc  # noqa: TID251 - the only module allowed to import aetcd

from holdfast.logs import get_logger
from holdfast.store.errors import (
    AuthFailed,
    CasConflict,
    Compacted,
    LeaseNotFound,
    PermissionDenied,
    StoreError,
    StoreUnavailable,
)
from holdfast.store.etcd_wire import change_batches, encode_key, key_value, prefix_end
from holdfast.store.failover import DEFAULT_TIMEOUT, FailoverClient
from holdfast.store.grpc_channel import CHANNEL_OPTIONS, Connection, TlsCredentials
from holdfast.store.grpc_errors import RETRYABLE, detail
from holdfast.store.lease_mux import KeepAliveMux
from holdfast.store.protocol import Store
from holdfast.store.security import EtcdSecurity
from holdfast.store.types import (
    MAX_RANGES_PER_READ,
    PROBE_KEY,
    Change,
    Endpoint,
    KeyRange,
    KeyValue,
    Put,
    Traffic,
    TxnResult,
    as_range,
)
from holdfast.store.watch_mux import Watcher, WatchMux

_REQUIRE_LEADER: Final = (("hasleader", "true"),)

log = get_logger(__name__)


class _Conn(Connection):
    """A connection with aetcd's service stubs on its channel."""

    def __init__(self, index: int, endpoint: Endpoint, tls: TlsCredentials | None) -> None:
        if tls is None:
            channel = rpc.insecure_channel(endpoint.target, options=CHANNEL_OPTIONS)
        else:
            channel = rpc.secure_channel(
                endpoint.target, tls.credentials, options=CHANNEL_OPTIONS + tls.options
            )
        super().__init__(index, endpoint, channel)
        self.kv: Any = rpc.KVStub(self.channel)
        self.lease: Any = rpc.LeaseStub(self.channel)
        self.watch: Any = rpc.WatchStub(self.channel)
        self.auth: Any = rpc.AuthStub(self.channel)


def _range_request(rng: KeyRange) -> Any:
    key = encode_key(rng.key)
    if not rng.is_prefix:
        return rpc.RangeRequest(key=key)
    return rpc.RangeRequest(
        key=key or b"\0",
        range_end=prefix_end(key),
        sort_order=rpc.RangeRequest.ASCEND,
        sort_target=rpc.RangeRequest.KEY,
    )


def _cancel_request(watch_id: int) -> Any:
    return rpc.WatchRequest(cancel_request=rpc.WatchCancelRequest(watch_id=watch_id))


def _refusal(what: str, reason: str) -> StoreError:
    """The error for a watch etcd cancelled (not for compaction, which is ``Compacted``)."""
    if "permission denied" in reason:
        return PermissionDenied(f"{what}: {reason} (the etcd user's roles do not grant this range)")
    return StoreUnavailable(f"{what}: cancelled by etcd: {reason}")


class EtcdStore(FailoverClient[_Conn]):
    """A connection to one etcd cluster, failing over between its client endpoints."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        security: EtcdSecurity | None = None,
    ) -> None:
        super().__init__(endpoints, timeout=timeout, security=security)
        self._traffic = Traffic()
        self._muxes: dict[int, WatchMux] = {}
        self._ka_muxes: dict[int, KeepAliveMux] = {}

    @property
    def traffic(self) -> Traffic:
        return self._traffic

    @property
    def watch_streams(self) -> int:
        """Watch streams open now (one per endpoint in use, whatever the number of watches)."""
        return sum(1 for mux in self._muxes.values() if mux.failed is None)

    def _failover(self, index: int, reason: str) -> None:
        before = self._index
        super()._failover(index, reason)
        if self._index != before:
            # Calls go to another endpoint now: so do the watches. The old endpoint's stream
            # may be hanging silently; every watch on it resumes on the new one.
            why = f"failed over from {self._endpoints[before].url}: {reason}"
            mux = self._muxes.pop(before, None)
            if mux is not None:
                mux.close(why)
            keepalives = self._ka_muxes.pop(before, None)
            if keepalives is not None:
                keepalives.close(why)

    async def close(self) -> None:
        muxes, self._muxes = list(self._muxes.values()), {}
        for mux in muxes:
            mux.close()
        keepalives, self._ka_muxes = list(self._ka_muxes.values()), {}
        for keepalive in keepalives:
            keepalive.close()
        await super().close()

    async def connect(self) -> None:
        self._index = 0
        await self.revision()
        log.info("etcd_connected", endpoint=self.endpoint)

    def _open(self, index: int) -> _Conn:
        return _Conn(index, self._endpoints[index], self._tls)

    async def _authenticate(self, conn: _Conn, budget: float, stale: str = "") -> None:
        """Give ``conn`` a token unless it has one other than ``stale``; one call at a time."""
        async with conn.auth_lock:
            if conn.token and conn.token != stale:
                return  # another call re-authenticated meanwhile
            conn.token = ""
            request = rpc.AuthenticateRequest(
                name=self._security.user, password=self._security.password
            )
            try:
                response = await conn.auth.Authenticate(request, timeout=budget)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in RETRYABLE:
                    raise
                raise AuthFailed(
                    f"etcd authentication as user {self._security.user!r} at "
                    f"{conn.endpoint.url} failed: {detail(exc)}"
                ) from exc
            conn.token = str(response.token)
            log.info("etcd_authenticated", endpoint=conn.endpoint.url, user=self._security.user)

    async def _unary(self, what: str, method: str, request: Any, *, write: bool = False) -> Any:
        stub, name = method.split(".")  # e.g. "kv.Put"

        def call(conn: _Conn, budget: float) -> Awaitable[Any]:
            method = getattr(getattr(conn, stub), name)
            return method(request, timeout=budget, metadata=conn.metadata)  # type: ignore[no-any-return]

        response = await self._run(what, call, retry_sent=not write)
        self._traffic.response(response.ByteSize())
        return response

    def _listed(self, raw: Any) -> KeyValue:
        kv = key_value(raw)
        self._traffic.key(kv.key, len(kv.value))
        return kv

    async def get(self, key: str) -> KeyValue | None:
        request = rpc.RangeRequest(key=encode_key(key))
        response = await self._unary(f"get {key}", "kv.Range", request)
        return self._listed(response.kvs[0]) if response.kvs else None

    async def list_prefix(self, prefix: str) -> tuple[int, list[KeyValue]]:
        request = _range_request(KeyRange.prefix(prefix))
        response = await self._unary(f"list {prefix}", "kv.Range", request)
        return int(response.header.revision), [self._listed(raw) for raw in response.kvs]

    async def list_ranges(self, ranges: Sequence[KeyRange]) -> tuple[int, list[list[KeyValue]]]:
        if len(ranges) > MAX_RANGES_PER_READ:
            raise ValueError(f"at most {MAX_RANGES_PER_READ} ranges in one read, not {len(ranges)}")
        if not ranges:
            return await self.revision(), []
        # A transaction of reads only: every range read at the transaction's one revision.
        ops = [rpc.RequestOp(request_range=_range_request(r)) for r in ranges]
        request = rpc.TxnRequest(compare=[], success=ops, failure=[])
        what = f"list {len(ranges)} range(s)"
        response = await self._unary(what, "kv.Txn", request)
        listed = [[self._listed(raw) for raw in op.response_range.kvs] for op in response.responses]
        return int(response.header.revision), listed

    async def revision(self) -> int:
        # A linearizable read: it needs a leader, which makes it a liveness probe as well.
        request = rpc.RangeRequest(key=encode_key(PROBE_KEY), count_only=True)
        response = await self._unary("revision", "kv.Range", request)
        return int(response.header.revision)

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        request = rpc.PutRequest(key=encode_key(key), value=value, lease=lease)
        response = await self._unary(f"put {key}", "kv.Put", request, write=True)
        return int(response.header.revision)

    async def delete(self, key: str) -> int:
        request = rpc.DeleteRangeRequest(key=encode_key(key))
        response = await self._unary(f"delete {key}", "kv.DeleteRange", request, write=True)
        return int(response.header.revision)

    async def txn(self, puts: Sequence[Put], deletes: Sequence[str] = ()) -> TxnResult:
        twice = [k for k, n in Counter([p.key for p in puts] + list(deletes)).items() if n > 1]
        if twice:  # etcd refuses these too, with a vaguer message
            raise ValueError(f"a txn may touch each key once; these appear twice: {twice}")
        guarded = [p for p in puts if p.expected_mod_revision is not None]
        compare = [
            rpc.Compare(
                result=rpc.Compare.EQUAL,
                target=rpc.Compare.MOD,
                key=encode_key(p.key),
                mod_revision=p.expected_mod_revision,
            )
            for p in guarded
        ]
        success = [
            rpc.RequestOp(
                request_put=rpc.PutRequest(key=encode_key(p.key), value=p.value, lease=p.lease)
            )
            for p in puts
        ] + [
            rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=encode_key(k)))
            for k in deletes
        ]
        # The failure branch reads the guarded keys, so a conflict names the actual revision.
        failure = [
            rpc.RequestOp(request_range=rpc.RangeRequest(key=encode_key(p.key))) for p in guarded
        ]
        request = rpc.TxnRequest(compare=compare, success=success, failure=failure)
        what = f"txn on {len(puts) + len(deletes)} key(s)"
        response = await self._unary(what, "kv.Txn", request, write=True)
        if response.succeeded:
            return TxnResult(revision=int(response.header.revision))
        for put, result in zip(guarded, response.responses, strict=True):
            kvs = result.response_range.kvs
            actual = int(kvs[0].mod_revision) if kvs else 0
            if actual != put.expected_mod_revision:
                raise CasConflict(put.key, put.expected_mod_revision or 0, actual)
        raise StoreError(f"{what} failed its comparison but every guarded key matched on re-read")

    async def grant_lease(self, ttl: int) -> int:
        if ttl <= 0:
            raise ValueError(f"lease TTL must be positive, got {ttl}")
        # Retrying a grant at worst leaves an unused lease behind, and that one expires.
        request = rpc.LeaseGrantRequest(TTL=ttl, ID=0)
        response = await self._unary("grant lease", "lease.LeaseGrant", request)
        return int(response.ID)

    def _keepalives(self, conn: _Conn) -> KeepAliveMux:
        """The connection's keepalive stream, opened on first use with its token."""
        mux = self._ka_muxes.get(conn.index)
        if mux is not None and mux.usable and mux.token == conn.token:
            return mux
        if mux is not None:
            mux.close("replaced by a stream with a fresh token")
        mux = KeepAliveMux(
            conn.lease.LeaseKeepAlive(metadata=conn.metadata),
            index=conn.index,
            token=conn.token,
            request=lambda lease_id: rpc.LeaseKeepAliveRequest(ID=lease_id),
            on_broken=self._failover,
        )
        self._ka_muxes[conn.index] = mux
        return mux

    async def keepalive_once(self, lease_id: int) -> int:
        async def op(conn: _Conn, budget: float) -> int:
            mux = self._keepalives(conn)
            try:
                async with asyncio.timeout(budget):
                    return await mux.keepalive(lease_id)
            except StoreUnavailable as exc:
                raise TimeoutError(str(exc)) from exc  # a broken stream: retry on a new one

        ttl: int = await self._run(f"keepalive lease {lease_id}", op, retry_sent=True)
        return ttl

    async def revoke_lease(self, lease_id: int) -> None:
        request = rpc.LeaseRevokeRequest(ID=lease_id)
        with contextlib.suppress(LeaseNotFound):  # already gone is what we wanted
            await self._unary(f"revoke lease {lease_id}", "lease.LeaseRevoke", request)

    async def compact(self, revision: int) -> None:
        request = rpc.CompactionRequest(revision=revision, physical=False)
        try:
            await self._unary(f"compact {revision}", "kv.Compact", request)
        except StoreError as exc:
            if "has been compacted" not in str(exc):  # compacting twice is a no-op
                raise

    def _mux(self, conn: _Conn) -> WatchMux:
        """The connection's Watch stream, opened on first use with the connection's token."""
        mux = self._muxes.get(conn.index)
        if mux is not None and mux.usable and mux.token == conn.token:
            return mux
        if mux is not None:
            mux.retire()  # its token went stale, or it broke: its watches finish on it
        call = conn.watch.Watch(metadata=_REQUIRE_LEADER + conn.metadata)
        mux = WatchMux(
            call,
            index=conn.index,
            token=conn.token,
            cancel_request=_cancel_request,
            traffic=self._traffic,
            on_broken=self._failover,
        )
        self._muxes[conn.index] = mux
        return mux

    async def watch(
        self,
        what: str | KeyRange,
        start_revision: int,
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> AsyncGenerator[list[Change], None]:
        """Yield the changes in ``what`` from ``start_revision`` on, one list per revision.

        ``on_progress(revision)`` is called when the watch is established and on each of etcd's
        progress notifications, so an idle watch still shows it is alive.
        """
        rng = as_range(what)
        key = encode_key(rng.key)

        def create(watch_id: int) -> Any:
            return rpc.WatchRequest(
                create_request=rpc.WatchCreateRequest(
                    key=key or b"\0",
                    range_end=prefix_end(key) if rng.is_prefix else b"",
                    start_revision=start_revision,
                    progress_notify=True,
                    watch_id=watch_id,
                )
            )

        label = f"watch {rng}"

        async def open_watch(conn: _Conn, budget: float) -> Watcher:
            mux = self._mux(conn)
            try:  # no timer: adding a watch awaits neither the stream nor etcd
                return await mux.add(label, create)
            except StoreUnavailable as exc:
                # The stream broke while the watch was being created: as a call that timed
                # out, try again (on the next endpoint) within the budget.
                raise TimeoutError(str(exc)) from exc

        watcher: Watcher = await self._run(label, open_watch, retry_sent=True)
        try:
            response = await watcher.next()  # created (or refused, or compacted)
            while True:
                if response.compact_revision:
                    raise Compacted(int(response.compact_revision))
                if response.canceled:
                    reason = str(response.cancel_reason)
                    if "permission denied" in reason:
                        # etcd 3.4 answers a create on a stream whose token expired so too:
                        # the next watch opens a fresh stream with the connection's token.
                        watcher.mux.retire()
                    raise _refusal(label, reason)
                if not response.events and on_progress is not None:
                    on_progress(int(response.header.revision))
                for batch in change_batches(response.events, rpc.Event.DELETE):
                    yield batch
                response = await watcher.next()
        finally:
            watcher.close()


_CONFORMS: type[Store] = EtcdStore  # mypy checks the adapter against the protocol
