"""Calls to one etcd cluster that fail over between its client endpoints within a time budget.

Reads fail over across endpoints within one time budget. Writes fail over only while nothing
was sent, since a write whose reply was lost may still have been applied. With etcd's auth on, a
token that expired or that a changed auth store made stale is re-obtained and the call retried,
and a failover authenticates against the new endpoint.

``FailoverClient`` is the endpoint policy only; ``holdfast.store.etcd.EtcdStore`` builds on it
with aetcd's stubs (the one module that may import aetcd).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Generic, TypeVar

import grpc

from holdfast.logs import get_logger
from holdfast.store.errors import StoreUnavailable
from holdfast.store.grpc_channel import Connection, TlsCredentials
from holdfast.store.grpc_errors import RETRYABLE, detail, is_stale_token, translate
from holdfast.store.liveness import MAX_EXCUSED, starved
from holdfast.store.punctuality import current as loop_punctuality
from holdfast.store.security import EtcdSecurity
from holdfast.store.types import parse_endpoint

DEFAULT_TIMEOUT: Final = 5.0
# Every endpoint refusing connections for this long ends a call early (like etcdctl's dial
# timeout): a blip rides through, an etcd that is down is reported in seconds, not at the
# end of the whole call budget. A hanging endpoint still gets the full budget.
DOWN_GRACE_S: Final = 2.0

ConnT = TypeVar("ConnT", bound=Connection)

# Log lines carry their module; the adapter's failover lines keep the name they always had.
log = get_logger("holdfast.store.etcd")


class FailoverClient(ABC, Generic[ConnT]):
    """Endpoints of one etcd cluster, one lazily opened connection each, and the current one."""

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
        # SecurityError (a ValueError) if the PEM files are unreadable.
        self._tls = TlsCredentials(security) if tls else None
        self._security = security
        self._timeout = timeout
        self._index = 0
        self._conns: dict[int, ConnT] = {}
        self._closed = False
        self._excused = 0  # timeouts in a row not held against the endpoint (a starved loop)
        self.failovers: Counter[str] = Counter()  # why the endpoint changed, and how often

    @abstractmethod
    def _open(self, index: int) -> ConnT:
        """A new connection to endpoint ``index``."""

    @abstractmethod
    async def _authenticate(self, conn: ConnT, budget: float, stale: str = "") -> None:
        """Give ``conn`` a token unless it has one other than ``stale``; one call at a time."""

    @property
    def endpoint(self) -> str:
        return self._endpoints[self._index].url

    @property
    def endpoints(self) -> list[str]:
        return [e.url for e in self._endpoints]

    async def close(self) -> None:
        self._closed = True
        conns, self._conns = list(self._conns.values()), {}
        for conn in conns:
            await conn.channel.close()

    def _conn(self, index: int) -> ConnT:
        if self._closed:
            raise StoreUnavailable("the etcd store is closed")
        conn = self._conns.get(index)
        if conn is None:
            conn = self._conns[index] = self._open(index)
        return conn

    def _failover(self, index: int, reason: str) -> None:
        # Concurrent failures of one endpoint rotate once, not once per failed call.
        if self._index != index or len(self._endpoints) == 1:
            return
        self._index = (index + 1) % len(self._endpoints)
        self.failovers[reason.split(":")[0][:60]] += 1
        log.warning(
            "etcd_endpoint_failover",
            from_endpoint=self._endpoints[index].url,
            to_endpoint=self.endpoint,
            reason=reason,
        )

    def _excuse(self, error: BaseException | None, since: float) -> bool:
        """True if ``error``, a timeout of a call sent at ``since``, came from this process's
        loop running late rather than from the endpoint; a few in a row at most, so that a
        member that hangs while this process is starved is still left."""
        timed_out = isinstance(error, TimeoutError) or (
            isinstance(error, grpc.aio.AioRpcError)
            and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        )
        sampler = loop_punctuality()
        if not timed_out or sampler is None or self._excused >= MAX_EXCUSED:
            return False  # nothing measures this loop (no probing mirror): judge as always
        now = asyncio.get_running_loop().time()
        if not starved(sampler.late_since(since), now - since):
            return False
        self._excused += 1
        return True

    async def _run(
        self, what: str, op: Callable[[ConnT, float], Awaitable[Any]], *, retry_sent: bool
    ) -> Any:
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
                    errors.append(f"{conn.endpoint.url}: authenticate: {detail(exc)}")
                    self._failover(index, detail(exc))
                    continue
            token = conn.token
            sent_at = loop.time()
            try:
                result = await op(conn, budget if retry_sent else remaining)
            except grpc.aio.UsageError as exc:
                raise StoreUnavailable(f"{what}: the etcd store is closed") from exc
            except (grpc.aio.AioRpcError, TimeoutError) as exc:
                if self._security.auth and is_stale_token(exc) and not stale_retried:
                    # etcd refused the token before applying anything: safe even for writes.
                    stale_retried = True
                    log.info("etcd_token_refresh", endpoint=conn.endpoint.url)
                    await self._authenticate(conn, max(0.1, deadline - loop.time()), token)
                    continue
                if isinstance(exc, grpc.aio.AioRpcError) and exc.code() not in RETRYABLE:
                    raise translate(exc, what) from exc
                last = exc
            else:
                self._excused = 0
                return result
            if not retry_sent:
                raise StoreUnavailable(
                    f"{what}: sent to {conn.endpoint.url} but failed ({detail(last)}); the "
                    "outcome is unknown: it may or may not have been applied"
                ) from last
            errors.append(f"{conn.endpoint.url}: {detail(last)}")
            if self._excuse(last, sent_at):
                # The deadline passed while this process's loop was starved, not while the
                # endpoint was silent: moving to another endpoint (and every watch of this one
                # with it) would only add work. Retry here within the budget left.
                continue
            self._failover(index, detail(last))
        tried = "; ".join(errors[-count:]) or "no attempt"
        waited = loop.time() - (deadline - self._timeout)
        raise StoreUnavailable(
            f"{what}: no etcd endpoint answered within {waited:.1f}s ({tried})"
        ) from last
