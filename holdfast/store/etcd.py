"""The etcd adapter: the one module that talks to etcd, through aetcd's gRPC stubs.

Reads fail over across endpoints within one time budget. Writes fail over only while nothing
was sent, since a write whose reply was lost may still have been applied. Watches drive the raw
gRPC stream so that each revision arrives as one batch and a member that lost its leader cancels
the stream (``hasleader`` metadata, as Go's clientv3.WithRequireLeader) instead of going silent.

``https://`` endpoints speak TLS (CA bundle, client certificate for mutual TLS, server name
override). With etcd's auth on, each connection authenticates once and sends its token on every
call; a token that expired or that a changed auth store made stale is re-obtained and the call
retried, and a failover authenticates against the new endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from typing import Any, Final, TypeAlias

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
from holdfast.store.security import EtcdSecurity
from holdfast.store.types import (
    PROBE_KEY,
    Change,
    Endpoint,
    KeyValue,
    Put,
    TxnResult,
    parse_endpoint,
)

DEFAULT_TIMEOUT: Final = 5.0
# Every endpoint refusing connections for this long ends a call early (like etcdctl's dial
# timeout): a blip rides through, an etcd that is down is reported in seconds, not at the
# end of the whole call budget. A hanging endpoint still gets the full budget.
DOWN_GRACE_S: Final = 2.0
# etcd answers pings sent more often than its --grpc-keepalive-min-time (5 s) with GOAWAY, so 6 s
# plus a 3 s ack timeout is as quick as dead-peer detection gets against a default server.
CHANNEL_OPTIONS: Final = (
    ("grpc.keepalive_time_ms", 6000),
    ("grpc.keepalive_timeout_ms", 3000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.ping_timeout_ms", 3000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", 128 << 20),
)
# INTERNAL is what gRPC reports for a connection reset mid-call, not only etcd's own failures.
_RETRYABLE: Final = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL}
)
_REQUIRE_LEADER: Final = (("hasleader", "true"),)
# What etcd answers for a token it no longer knows (expired, or issued by a restarted member) and
# for one issued before the auth store changed: both mean "authenticate again", as clientv3 does.
_STALE_TOKEN: Final = ("invalid auth token", "revision of auth store is old", "user name is empty")
_READY = grpc.ChannelConnectivity.READY
_DOWN = (grpc.ChannelConnectivity.TRANSIENT_FAILURE, grpc.ChannelConnectivity.SHUTDOWN)

log = get_logger(__name__)


class _Conn:
    def __init__(self, index: int, endpoint: Endpoint, tls: _Tls | None) -> None:
        self.index = index
        self.endpoint = endpoint
        if tls is None:
            self.channel: Any = rpc.insecure_channel(endpoint.target, options=CHANNEL_OPTIONS)
        else:
            self.channel = rpc.secure_channel(
                endpoint.target, tls.credentials, options=CHANNEL_OPTIONS + tls.options
            )
        self.kv: Any = rpc.KVStub(self.channel)
        self.lease: Any = rpc.LeaseStub(self.channel)
        self.watch: Any = rpc.WatchStub(self.channel)
        self.auth: Any = rpc.AuthStub(self.channel)
        self.token = ""
        self.auth_lock = asyncio.Lock()

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("token", self.token),) if self.token else ()

    async def wait_ready(self, budget: float) -> bool:
        """True once the channel is connected; False at once if it is failing."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + budget
        state = self.channel.get_state(try_to_connect=True)
        while state != _READY:
            remaining = deadline - loop.time()
            if state in _DOWN or remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self.channel.wait_for_state_change(state), remaining)
            except TimeoutError:
                return False
            state = self.channel.get_state(try_to_connect=True)
        return True


class _Tls:
    """gRPC channel credentials built once from the PEM files (read at construction)."""

    def __init__(self, security: EtcdSecurity) -> None:
        ca, key, chain = security.read_pem()
        self.credentials = grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=chain
        )
        self.options: tuple[tuple[str, Any], ...] = (
            (("grpc.ssl_target_name_override", security.server_name),)
            if security.server_name
            else ()
        )


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _s(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _prefix_end(prefix: bytes) -> bytes:
    for i in reversed(range(len(prefix))):
        if prefix[i] < 0xFF:
            return prefix[:i] + bytes([prefix[i] + 1])
    return b"\0"  # empty or all-0xff prefix: to the end of the keyspace


def _kv(raw: Any) -> KeyValue:
    return KeyValue(
        key=_s(raw.key),
        value=bytes(raw.value),
        mod_revision=int(raw.mod_revision),
        create_revision=int(raw.create_revision),
        version=int(raw.version),
        lease=int(raw.lease),
    )


def _batches(events: Any) -> Iterator[list[Change]]:
    batch: list[Change] = []
    for event in events:
        kv = event.kv
        if event.type == rpc.Event.DELETE:
            change = Change("delete", _s(kv.key), b"", int(kv.mod_revision))
        else:
            change = Change(
                "put", _s(kv.key), bytes(kv.value), int(kv.mod_revision),
                int(kv.create_revision), int(kv.version), int(kv.lease),
            )  # fmt: skip
        if batch and batch[-1].mod_revision != change.mod_revision:
            yield batch
            batch = []
        batch.append(change)
    if batch:
        yield batch


def _detail(exc: BaseException) -> str:
    if isinstance(exc, grpc.aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return "timed out" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"


def _translate(exc: BaseException, what: str) -> StoreError:
    code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else None
    message = f"{what}: {_detail(exc)}"
    if code is None or code in _RETRYABLE or code == grpc.StatusCode.CANCELLED:
        return StoreUnavailable(message)
    if code == grpc.StatusCode.NOT_FOUND and "lease" in message:
        return LeaseNotFound(message)
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(
            f"{message} (the etcd user's roles do not grant this key range; see the role layout: "
            "holdfastctl etcd-roles)"
        )
    return StoreError(message)


def _stale_token(exc: BaseException) -> bool:
    if not isinstance(exc, grpc.aio.AioRpcError):
        return False
    details = exc.details() or ""
    return any(marker in details for marker in _STALE_TOKEN)


_Op: TypeAlias = Callable[[_Conn, float], Awaitable[Any]]


class EtcdStore:
    """A connection to one etcd cluster, failing over between its client endpoints."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT,
        security: EtcdSecurity | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            raise ValueError("endpoints must be a sequence of URLs, not one string")
        if not endpoints:
            raise ValueError("at least one etcd endpoint is needed")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        self._endpoints = [parse_endpoint(url) for url in endpoints]
        security = security or EtcdSecurity()
        schemes = {e.tls for e in self._endpoints}
        if len(schemes) > 1:
            raise ValueError("etcd endpoints mix http:// and https://; use one scheme for all")
        tls = schemes == {True}
        if security.tls_files and not tls:
            raise ValueError("--etcd-ca/--etcd-cert/--etcd-key need https:// etcd endpoints")
        self._tls = _Tls(security) if tls else None  # SecurityError (a ValueError) if unreadable
        self._security = security
        self._timeout = timeout
        self._index = 0
        self._conns: dict[int, _Conn] = {}
        self._closed = False

    @property
    def endpoint(self) -> str:
        return self._endpoints[self._index].url

    @property
    def endpoints(self) -> list[str]:
        return [e.url for e in self._endpoints]

    async def connect(self) -> None:
        self._index = 0
        await self.revision()
        log.info("etcd_connected", endpoint=self.endpoint)

    async def close(self) -> None:
        self._closed = True
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            await conn.channel.close()

    def _conn(self, index: int) -> _Conn:
        if self._closed:
            raise StoreUnavailable("the etcd store is closed")
        conn = self._conns.get(index)
        if conn is None:
            conn = self._conns[index] = _Conn(index, self._endpoints[index], self._tls)
        return conn

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
                if exc.code() in _RETRYABLE:
                    raise
                raise AuthFailed(
                    f"etcd authentication as user {self._security.user!r} at "
                    f"{conn.endpoint.url} failed: {_detail(exc)}"
                ) from exc
            conn.token = str(response.token)
            log.info("etcd_authenticated", endpoint=conn.endpoint.url, user=self._security.user)

    def _failover(self, index: int, reason: str) -> None:
        # Concurrent failures of one endpoint rotate once, not once per failed call.
        if self._index != index or len(self._endpoints) == 1:
            return
        self._index = (index + 1) % len(self._endpoints)
        log.warning(
            "etcd_endpoint_failover",
            from_endpoint=self._endpoints[index].url,
            to_endpoint=self.endpoint,
            reason=reason,
        )

    async def _run(self, what: str, op: _Op, *, retry_sent: bool) -> Any:
        """Run ``op`` on the current endpoint, rotating on failure until the time budget ends.

        ``retry_sent`` is False for writes: once a write was sent, a failure is ambiguous.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        count = len(self._endpoints)
        errors: list[str] = []
        last: BaseException | None = None
        stale_retried = False
        refused = 0  # endpoints in a row that refused to connect
        down_since: float | None = None
        while (remaining := deadline - loop.time()) > 0:
            index = self._index
            conn = self._conn(index)
            # Leave room for another endpoint when this one hangs instead of refusing.
            budget = remaining if count == 1 else max(remaining / 2, min(remaining, 0.5))
            if not await conn.wait_ready(budget):
                errors.append(f"{conn.endpoint.url}: not connected")
                self._failover(index, "not connected")
                refused += 1
                if refused >= count:  # every endpoint is down: do not spin, nor wait for ever
                    now = loop.time()
                    down_since = now if down_since is None else down_since
                    if now - down_since >= DOWN_GRACE_S:
                        break
                    await asyncio.sleep(min(0.1, max(0.0, deadline - now)))
                continue
            refused, down_since = 0, None
            if self._security.auth and not conn.token:
                try:
                    await self._authenticate(conn, budget)
                except (grpc.aio.AioRpcError, TimeoutError) as exc:  # nothing was sent yet
                    last = exc
                    errors.append(f"{conn.endpoint.url}: authenticate: {_detail(exc)}")
                    self._failover(index, _detail(exc))
                    continue
            token = conn.token
            try:
                return await op(conn, budget if retry_sent else remaining)
            except grpc.aio.UsageError as exc:
                raise StoreUnavailable(f"{what}: the etcd store is closed") from exc
            except (grpc.aio.AioRpcError, TimeoutError) as exc:
                if self._security.auth and _stale_token(exc) and not stale_retried:
                    # etcd refused the token before applying anything: safe even for writes.
                    stale_retried = True
                    log.info("etcd_token_refresh", endpoint=conn.endpoint.url)
                    await self._authenticate(conn, max(0.1, deadline - loop.time()), token)
                    continue
                if isinstance(exc, grpc.aio.AioRpcError) and exc.code() not in _RETRYABLE:
                    raise _translate(exc, what) from exc
                last = exc
            if not retry_sent:
                raise StoreUnavailable(
                    f"{what}: sent to {conn.endpoint.url} but failed ({_detail(last)}); the "
                    "outcome is unknown: it may or may not have been applied"
                ) from last
            errors.append(f"{conn.endpoint.url}: {_detail(last)}")
            self._failover(index, _detail(last))
        tried = "; ".join(errors[-count:]) or "no attempt"
        waited = loop.time() - (deadline - self._timeout)
        raise StoreUnavailable(
            f"{what}: no etcd endpoint answered within {waited:.1f}s ({tried})"
        ) from last

    async def _unary(self, what: str, method: str, request: Any, *, write: bool = False) -> Any:
        stub, name = method.split(".")  # e.g. "kv.Put"

        def call(conn: _Conn, budget: float) -> Awaitable[Any]:
            method = getattr(getattr(conn, stub), name)
            return method(request, timeout=budget, metadata=conn.metadata)  # type: ignore[no-any-return]

        return await self._run(what, call, retry_sent=not write)

    async def get(self, key: str) -> KeyValue | None:
        response = await self._unary(f"get {key}", "kv.Range", rpc.RangeRequest(key=_b(key)))
        return _kv(response.kvs[0]) if response.kvs else None

    async def list_prefix(self, prefix: str) -> tuple[int, list[KeyValue]]:
        start = _b(prefix) or b"\0"
        request = rpc.RangeRequest(
            key=start,
            range_end=_prefix_end(_b(prefix)),
            sort_order=rpc.RangeRequest.ASCEND,
            sort_target=rpc.RangeRequest.KEY,
        )
        response = await self._unary(f"list {prefix}", "kv.Range", request)
        return int(response.header.revision), [_kv(raw) for raw in response.kvs]

    async def revision(self) -> int:
        # A linearizable read: it needs a leader, which makes it a liveness probe as well.
        request = rpc.RangeRequest(key=_b(PROBE_KEY), count_only=True)
        response = await self._unary("revision", "kv.Range", request)
        return int(response.header.revision)

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        request = rpc.PutRequest(key=_b(key), value=value, lease=lease)
        response = await self._unary(f"put {key}", "kv.Put", request, write=True)
        return int(response.header.revision)

    async def delete(self, key: str) -> int:
        request = rpc.DeleteRangeRequest(key=_b(key))
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
                key=_b(p.key),
                mod_revision=p.expected_mod_revision,
            )
            for p in guarded
        ]
        success = [
            rpc.RequestOp(request_put=rpc.PutRequest(key=_b(p.key), value=p.value, lease=p.lease))
            for p in puts
        ] + [rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=_b(k))) for k in deletes]
        # The failure branch reads the guarded keys, so a conflict names the actual revision.
        failure = [rpc.RequestOp(request_range=rpc.RangeRequest(key=_b(p.key))) for p in guarded]
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

    async def keepalive_once(self, lease_id: int) -> int:
        request = rpc.LeaseKeepAliveRequest(ID=lease_id)

        async def op(conn: _Conn, budget: float) -> int:
            call = conn.lease.LeaseKeepAlive(
                iter((request,)), timeout=budget, metadata=conn.metadata
            )
            try:
                async for response in call:
                    return max(0, int(response.TTL))
            finally:
                call.cancel()
            raise StoreUnavailable(f"keepalive of lease {lease_id}: stream ended without a reply")

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

    async def watch(
        self,
        prefix: str,
        start_revision: int,
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> AsyncGenerator[list[Change], None]:
        """Yield the changes under ``prefix`` from ``start_revision`` on, one list per revision.

        ``on_progress(revision)`` is called when the watch is established and on each of etcd's
        progress notifications, so an idle watch still shows it is alive.
        """
        create = rpc.WatchRequest(
            create_request=rpc.WatchCreateRequest(
                key=_b(prefix) or b"\0",
                range_end=_prefix_end(_b(prefix)),
                start_revision=start_revision,
                progress_notify=True,
            )
        )

        async def open_stream(conn: _Conn, budget: float) -> tuple[Any, Any, int]:
            call = conn.watch.Watch(metadata=_REQUIRE_LEADER + conn.metadata)
            try:
                await call.write(create)
                first = await asyncio.wait_for(call.read(), budget)
            except BaseException:
                call.cancel()
                raise
            return call, first, conn.index

        what = f"watch {prefix}"
        call, response, index = await self._run(what, open_stream, retry_sent=True)
        try:
            while True:
                if response is grpc.aio.EOF:
                    raise StoreUnavailable(f"{what}: etcd closed the stream")
                if response.compact_revision:
                    raise Compacted(int(response.compact_revision))
                if response.canceled:
                    raise StoreUnavailable(f"{what}: cancelled by etcd: {response.cancel_reason}")
                if not response.events and on_progress is not None:
                    on_progress(int(response.header.revision))
                for batch in _batches(response.events):
                    yield batch
                try:
                    response = await call.read()
                except (grpc.RpcError, grpc.aio.UsageError) as exc:
                    self._failover(index, "watch stream broke")
                    raise _translate(exc, f"{what}: stream broke") from exc
        finally:
            call.cancel()
