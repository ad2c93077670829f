"""The provider client: keep-alive connections, the SSRF guard at connect time, TLS, deadlines.

``Client.request`` sends one request and returns the ``Response`` once its head arrived; its
holder reads the body and then calls ``release`` (the connection goes back to the pool when the
answer was read to its end) or ``close``. Deadlines: ``head_timeout`` bounds everything up to the
head, and with ``idle=0`` the whole answer too; with ``idle`` > 0 (streams) each gap between
reads after the head is bounded instead. Connecting is bounded by ``connect_timeout`` as well.
``cut`` ends every call in flight with the given exception.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import socket
import ssl
from collections.abc import Mapping

from holdfast.net.guard import HostPolicy
from sidecar.upstream.h1.connection import Connection
from sidecar.upstream.h1.deadlines import Sweeper
from sidecar.upstream.h1.dns import DEFAULT_TTL, Address, GuardedDns
from sidecar.upstream.h1.errors import ConnectFailed, ResponseTimeout
from sidecar.upstream.h1.pool import DEFAULT_KEEPALIVE, DEFAULT_MAX_IDLE, IdlePool
from sidecar.upstream.h1.request import Target, encode_head
from sidecar.upstream.h1.response import Response


class Client:
    def __init__(
        self,
        policy: HostPolicy,
        *,
        connect_timeout: float,
        keepalive: float = DEFAULT_KEEPALIVE,
        max_idle: int = DEFAULT_MAX_IDLE,
        dns_ttl: float = DEFAULT_TTL,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.connect_timeout = connect_timeout
        self.dns = GuardedDns(policy, ttl=dns_ttl)
        self.pool: IdlePool[Connection] = IdlePool(keepalive=keepalive, max_idle=max_idle)
        self._tls = tls
        self._loop = asyncio.get_running_loop()
        self.sweeper: Sweeper[Connection] = Sweeper(self._loop)
        self._connecting: set[asyncio.Timeout] = set()
        self._cut: BaseException | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self.opened = 0  # connections opened so far (tests and metrics read it)

    @property
    def in_flight(self) -> int:
        return len(self.sweeper) + len(self._connecting)

    async def request(
        self,
        target: Target,
        method: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        head_timeout: float,
        idle: float = 0.0,
    ) -> Response:
        head = encode_head(method, target, headers, len(body))
        now = self._loop.time()
        deadline = now + head_timeout
        conn = self.pool.take(target.key, now)
        if self.pool.stale:
            for old in self.pool.stale:
                old.shut()
            self.pool.stale.clear()
        if conn is None:
            conn = await self._connect(target, deadline)
            if self._cut is not None:  # cut while it connected: it never goes out
                conn.shut()
                raise self._cut
        try:
            future = conn.send(head, body, deadline, idle)
        except BaseException:
            conn.shut()
            raise
        self.sweeper.add(conn)
        try:
            return await future
        except BaseException:
            # Failed, timed out, cut, or the caller gave up (the agent hung up): the connection
            # closes, so the provider stops working for nobody.
            self.finish(conn, False)
            raise

    def finish(self, conn: Connection, reuse: bool) -> None:
        """The holder of an answer is done with it (``Connection.release``/``close``)."""
        self.sweeper.discard(conn)
        if reuse and self._cut is None:
            conn.reset_idle()
            if self.pool.put(conn.key, conn, self._loop.time()):
                if self._expiry is None:
                    self._expiry = self._loop.call_later(self.pool.keepalive, self._expire_idle)
                return
        conn.shut()

    def _expire_idle(self) -> None:
        self._expiry = None
        gone, following = self.pool.expire(self._loop.time())
        for conn in gone:
            conn.shut()
        if following < math.inf:
            self._expiry = self._loop.call_at(following, self._expire_idle)

    async def _connect(self, target: Target, deadline: float) -> Connection:
        limit = asyncio.timeout_at(min(deadline, self._loop.time() + self.connect_timeout))
        self._connecting.add(limit)
        try:
            async with limit:
                return await self._open(target)
        except TimeoutError as exc:
            if self._cut is not None:
                raise self._cut from exc
            raise ResponseTimeout(f"connecting to {target.host_header} timed out") from exc
        finally:
            self._connecting.discard(limit)

    async def _open(self, target: Target) -> Connection:
        try:
            literal = ipaddress.ip_address(target.host)
        except ValueError:
            # May raise AddressRefused (the caller reports the policy's reason) or OSError.
            addresses: list[Address] = await self.dns.resolve(target.host, target.port)
        else:
            family = socket.AF_INET6 if literal.version == 6 else socket.AF_INET
            addresses = [(family, target.host)]
        tls = self._tls_context() if target.tls else None
        last: OSError | None = None
        for family, address in addresses:
            try:
                _, conn = await self._loop.create_connection(
                    lambda: Connection(self, target.key, target.host_header),
                    address,
                    target.port,
                    family=family,
                    ssl=tls,
                    server_hostname=target.host if tls is not None else None,
                )
            except OSError as exc:
                last = exc
                continue
            self.opened += 1
            return conn
        raise ConnectFailed(f"cannot connect to {target.host_header}") from last

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            # The system trust store, hostname checking and SNI: the defaults, never relaxed.
            self._tls = ssl.create_default_context()
        return self._tls

    def cut(self, exc: BaseException) -> int:
        """End every call in flight with ``exc``; returns how many there were."""
        self._cut = exc
        calls = self.sweeper.calls()
        for conn in calls:
            conn.cut(exc)
        now = self._loop.time()
        for limit in self._connecting:
            limit.reschedule(now)
        return len(calls) + len(self._connecting)

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        for conn in self.sweeper.calls():
            conn.shut()
        self.sweeper.close()
        for conn in self.pool.drain():
            conn.shut()
        self.dns.close()
