"""The sidecar's connections to its MCP backends: one backend session per sidecar session.

A handshake-era backend keeps state per session, so each agent session gets its own backend
session (its own ``Mcp-Session-Id``), opened on first use and closed (DELETE) with the agent's
session; a modern backend is stateless and one connection serves every session. A backend that
forgot a session (restart, expiry: HTTP 404) is reconnected once, transparently. Each backend's
live ``tools/list`` is cached a short while for drift checks and presentation fields.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from holdfast.logs import get_logger
from holdfast.mcp.client import Connection, McpClient, McpFault, list_all

log = get_logger(__name__)

SHARED: Final = "-"
DEFAULT_CONNECT_TIMEOUT_S: Final = 5.0
DEFAULT_LIST_TTL_S: Final = 30.0
MAX_CONNECTIONS: Final = 4096


@dataclass(slots=True)
class _Listing:
    tools: dict[str, dict[str, Any]] | None
    at: float


class Backends:
    def __init__(
        self,
        client: McpClient,
        *,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        list_ttl_s: float = DEFAULT_LIST_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.connect_timeout_s = connect_timeout_s
        self.list_ttl_s = list_ttl_s
        self.clock = clock
        self._conns: OrderedDict[tuple[str, str], Connection] = OrderedDict()
        self._opening: dict[tuple[str, str], asyncio.Future[Connection]] = {}
        self._modern: dict[str, Connection] = {}  # url -> the shared stateless connection
        self._listings: dict[str, _Listing] = {}
        self.reconnects = 0

    async def start(self) -> None:
        await self.client.start()

    async def close(self) -> None:
        ends = [self.client.end(c, timeout_s=1.0) for c in self._conns.values()]
        await asyncio.gather(*ends, return_exceptions=True)
        self._conns.clear()
        await self.client.close()

    async def connection(self, key: str, url: str) -> Connection:
        shared = self._modern.get(url)
        if shared is not None:
            return shared
        held = self._conns.get((key, url))
        if held is not None:
            self._conns.move_to_end((key, url))
            return held
        opening = self._opening.get((key, url))
        if opening is not None:
            return await asyncio.shield(opening)
        future = self._opening[(key, url)] = asyncio.get_running_loop().create_future()
        try:
            conn = await self.client.connect(url, timeout_s=self.connect_timeout_s)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a shielded waiter may not exist
            raise
        finally:
            del self._opening[(key, url)]
        if conn.era == "modern":
            self._modern[url] = conn
        else:
            self._conns[(key, url)] = conn
            while len(self._conns) > MAX_CONNECTIONS:
                _, oldest = self._conns.popitem(last=False)
                asyncio.get_running_loop().create_task(self.client.end(oldest, timeout_s=1.0))
        future.set_result(conn)
        return conn

    def forget(self, key: str, url: str) -> None:
        self._conns.pop((key, url), None)
        self._modern.pop(url, None)

    async def request(
        self,
        key: str,
        url: str,
        method: str,
        params: dict[str, Any],
        *,
        timeout_s: float,
        extra_headers: dict[str, str] | None = None,
        request_id: str = "",
    ) -> dict[str, Any]:
        """One request on ``key``'s backend session; McpFault / McpRpcError as the client."""
        for attempt in (1, 2):
            conn = await self.connection(key, url)
            try:
                return await self.client.call(
                    conn, method, params, timeout_s=timeout_s,
                    extra_headers=extra_headers, request_id=request_id,
                )  # fmt: skip
            except McpFault as exc:
                if exc.outcome != "session_lost" or attempt == 2:
                    raise
                self.forget(key, url)
                self.reconnects += 1
                log.info("mcp_backend_session_renewed", backend=url)
        raise AssertionError("unreachable")

    async def end(self, key: str) -> None:
        """The agent's session ended: end its backend sessions."""
        mine = [k for k in self._conns if k[0] == key]
        conns = [self._conns.pop(k) for k in mine]
        await asyncio.gather(
            *(self.client.end(c, timeout_s=1.0) for c in conns), return_exceptions=True
        )

    async def live_tools(
        self, url: str, *, timeout_s: float, max_age_s: float | None = None
    ) -> dict[str, dict[str, Any]] | None:
        """The backend's own tools by name (cached for ``list_ttl_s``, or less when
        ``max_age_s`` says so); None when it could not be listed."""
        now = self.clock()
        cached = self._listings.get(url)
        ttl = self.list_ttl_s if max_age_s is None else min(self.list_ttl_s, max_age_s)
        if cached is not None and now - cached.at < ttl:
            return cached.tools
        tools: dict[str, dict[str, Any]] | None
        try:
            conn = await self.connection(SHARED, url)
            found = await list_all(self.client, conn, "tools/list", "tools", timeout_s=timeout_s)
            tools = {str(t.get("name")): t for t in found}
        except Exception as exc:  # any failure: no listing this time, nothing a session sees
            log.info("mcp_backend_list_failed", backend=url, error=type(exc).__name__)
            self.forget(SHARED, url)
            tools = None
        self._listings[url] = _Listing(tools, now)
        return tools

    def listing_age(self, url: str) -> float:
        """Seconds since the backend's live tools were listed (infinite: never)."""
        cached = self._listings.get(url)
        return float("inf") if cached is None else self.clock() - cached.at

    def status(self) -> dict[str, Any]:
        seen: dict[str, dict[str, Any]] = {}
        for url, conn in self._modern.items():
            seen[url] = {"era": "modern", "version": conn.version, "sessions": 0}
        for (_key, url), conn in self._conns.items():
            entry = seen.setdefault(url, {"era": conn.era, "version": conn.version, "sessions": 0})
            entry["sessions"] += 1
        return {"backends": dict(sorted(seen.items())), "reconnects": self.reconnects}
