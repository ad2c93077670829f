"""A client of MCP servers over Streamable HTTP: the sidecar's backends, configsvc's imports.

``connect`` asks the server which era it speaks: a ``server/discover`` probe at the current
revision, falling back to the ``initialize`` handshake (and its ``Mcp-Session-Id``) on anything
that is not a modern answer -- the order the 2026-07-28 versioning section gives clients that
speak both. ``call`` sends one request and reads its answer, a JSON body or an SSE stream.

Every way the server can fail comes back as an ``McpFault`` with an outcome (``timeout``,
``unreachable``, ``backend_error``, ``off_spec``, ``too_large``, ``host_not_allowed``,
``redirect_refused``, ``session_lost``) and a sentence a model can read; a JSON-RPC error the
server answered is an ``McpRpcError``. Hosts pass the process's upstream policy (SSRF guard)
before the call and again at connect time.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from holdfast import __version__
from holdfast.json_limits import JsonRefused, loads_bounded
from holdfast.logs import REQUEST_ID_HEADER
from holdfast.mcp import versions, wire
from holdfast.mcp.sse import SseReader, SseTooLarge
from holdfast.mcp.versions import Era
from holdfast.net.guard import HostPolicy, HostRefused
from holdfast.net.resolver import guarded_connector, refused_reason

DEFAULT_MAX_BYTES: Final = 1 << 20
READ_CHUNK: Final = 64 * 1024
ACCEPT: Final = "application/json, text/event-stream"
CLIENT_NAME: Final = "holdfast"


class McpFault(Exception):
    """The server could not be used for this call; ``outcome`` classifies why."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message


class McpRpcError(Exception):
    """The server answered the request with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@dataclass(slots=True)
class Connection:
    """What the server said when connected: its era, revision, session and capabilities."""

    url: str
    era: Era
    version: str
    session_id: str | None = None
    capabilities: dict[str, Any] = field(default_factory=dict)
    server_info: dict[str, Any] = field(default_factory=dict)
    instructions: str = ""

    def has(self, capability: str) -> bool:
        return isinstance(self.capabilities.get(capability), dict)


class McpClient:
    def __init__(
        self,
        *,
        policy: HostPolicy | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        client_name: str = CLIENT_NAME,
    ) -> None:
        self.policy = policy if policy is not None else HostPolicy()
        self.max_bytes = max_bytes
        self.client_info = {"name": client_name, "version": __version__}
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=guarded_connector(self.policy, limit=256, enable_cleanup_closed=True),
                auto_decompress=True,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- connecting ----------------------------------------------------------------------

    async def connect(self, url: str, *, timeout_s: float) -> Connection:
        probe = Connection(url, "modern", versions.LATEST)
        try:
            found = await self.call(probe, "server/discover", {}, timeout_s=timeout_s)
        except McpRpcError:
            return await self._handshake(url, timeout_s)
        except McpFault as exc:
            # A handshake-era server refuses the probe at the HTTP level (400 without a
            # session, 404/405 for the method); only a server that cannot be reached is final.
            if exc.outcome in ("timeout", "unreachable", "host_not_allowed", "redirect_refused"):
                raise
            return await self._handshake(url, timeout_s)
        supported = found.get("supportedVersions")
        offered = supported if isinstance(supported, list) else []
        mutual = [v for v in versions.MODERN_VERSIONS if v in offered]
        if not mutual:
            return await self._handshake(url, timeout_s)
        meta = found.get("_meta") if isinstance(found.get("_meta"), dict) else {}
        return Connection(
            url,
            "modern",
            mutual[-1],
            capabilities=_dict(found.get("capabilities")),
            server_info=_dict((meta or {}).get(versions.SERVER_INFO_META)),
            instructions=str(found.get("instructions") or "")[:4096],
        )

    async def _handshake(self, url: str, timeout_s: float) -> Connection:
        conn = Connection(url, "handshake", versions.LATEST_HANDSHAKE)
        params = {
            "protocolVersion": versions.LATEST_HANDSHAKE,
            "capabilities": {},
            "clientInfo": self.client_info,
        }
        answer, headers = await self._post(conn, "initialize", params, timeout_s, initialize=True)
        version = answer.get("protocolVersion")
        if version not in versions.HANDSHAKE_VERSIONS:
            raise McpFault(
                "off_spec", f"the MCP server answered initialize with revision {version!r:.40}"
            )
        conn.version = version
        conn.session_id = headers.get(versions.SESSION_HEADER) or None
        conn.capabilities = _dict(answer.get("capabilities"))
        conn.server_info = _dict(answer.get("serverInfo"))
        conn.instructions = str(answer.get("instructions") or "")[:4096]
        await self.notify(conn, "notifications/initialized", timeout_s=timeout_s)
        return conn

    async def end(self, conn: Connection, *, timeout_s: float) -> None:
        """Close a handshake-era session (DELETE); servers may refuse (405): that is fine."""
        if conn.era != "handshake" or conn.session_id is None:
            return
        session = await self._client()
        try:
            async with asyncio.timeout(timeout_s):
                async with session.delete(
                    conn.url, headers=self._headers(conn, None, None), allow_redirects=False
                ):
                    pass
        except (TimeoutError, aiohttp.ClientError, OSError):
            return

    # -- calls ---------------------------------------------------------------------------

    async def call(
        self,
        conn: Connection,
        method: str,
        params: dict[str, Any],
        *,
        timeout_s: float,
        extra_headers: dict[str, str] | None = None,
        request_id: str = "",
    ) -> dict[str, Any]:
        """The result of one request, or McpFault / McpRpcError."""
        answer, _ = await self._post(
            conn, method, params, timeout_s, extra=extra_headers, request_id=request_id
        )
        return answer

    async def notify(
        self,
        conn: Connection,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        timeout_s: float,
    ) -> None:
        session = await self._client()
        body = wire.notification(method, self._params(conn, params or {}))
        try:
            async with asyncio.timeout(timeout_s):
                async with session.post(
                    conn.url,
                    data=json.dumps(body).encode(),
                    headers=self._headers(conn, method, None),
                    allow_redirects=False,
                ) as resp:
                    await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError):
            return  # a lost notification is no failure of the session

    async def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            await self.start()
        assert self._session is not None
        return self._session

    def _params(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any]:
        if conn.era != "modern":
            return params
        meta = dict(params.get("_meta") or {})
        meta[versions.PROTOCOL_VERSION_META] = conn.version
        meta.setdefault(versions.CLIENT_CAPABILITIES_META, {})
        meta.setdefault(versions.CLIENT_INFO_META, self.client_info)
        return {**params, "_meta": meta}

    def _headers(
        self, conn: Connection, method: str | None, params: dict[str, Any] | None, *,
        initialize: bool = False,
    ) -> dict[str, str]:  # fmt: skip
        headers = {"Accept": ACCEPT, "Content-Type": "application/json"}
        if initialize:
            return headers
        headers[versions.PROTOCOL_VERSION_HEADER] = conn.version
        if conn.era == "handshake":
            if conn.session_id is not None:
                headers[versions.SESSION_HEADER] = conn.session_id
            return headers
        if method is not None:
            headers[versions.METHOD_HEADER] = method
            named = versions.NAME_PARAMS.get(method)
            value = (params or {}).get(named) if named else None
            if isinstance(value, str):
                headers[versions.NAME_HEADER] = versions.encode_header_value(value)
        return headers

    async def _post(
        self,
        conn: Connection,
        method: str,
        params: dict[str, Any],
        timeout_s: float,
        *,
        initialize: bool = False,
        extra: dict[str, str] | None = None,
        request_id: str = "",
    ) -> tuple[dict[str, Any], dict[str, str]]:
        try:
            self.policy.check_url(conn.url)
        except HostRefused as exc:
            raise McpFault("host_not_allowed", f"the MCP server {exc}") from exc
        session = await self._client()
        ident = next(self._ids)
        body = wire.request(ident, method, self._params(conn, params))
        headers = self._headers(conn, method, params, initialize=initialize) | (extra or {})
        if request_id:
            headers[REQUEST_ID_HEADER] = request_id
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        try:
            async with asyncio.timeout(timeout_s):
                async with session.post(
                    conn.url, data=payload, headers=headers, allow_redirects=False
                ) as resp:
                    answer = await self._answer(conn, resp, ident)
                    return answer, dict(resp.headers)
        except TimeoutError as exc:
            raise McpFault("timeout", f"the MCP server took over {timeout_s:g}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            if (reason := refused_reason(exc)) is not None:
                raise McpFault("host_not_allowed", f"the MCP server {reason}") from exc
            raise McpFault(
                "unreachable",
                f"the MCP server is unreachable or broke the connection ({type(exc).__name__})",
            ) from exc

    async def _answer(
        self, conn: Connection, resp: aiohttp.ClientResponse, ident: int
    ) -> dict[str, Any]:
        status = resp.status
        if 300 <= status < 400:
            raise McpFault(
                "redirect_refused", f"the MCP server answered with a redirect (HTTP {status})"
            )
        if status == 404 and conn.session_id is not None:
            raise McpFault("session_lost", "the MCP server no longer knows the session")
        if status >= 500:
            raise McpFault("backend_error", f"the MCP server failed (HTTP {status})")
        kind = resp.content_type
        if kind == "text/event-stream" and status < 300:
            return await self._from_stream(resp, ident)
        raw = await self._read(resp)
        if kind != "application/json":
            if status >= 400:
                raise McpFault(
                    "backend_rejected",
                    f"the MCP server refused the request (HTTP {status}): "
                    + raw[:200].decode("utf-8", "replace"),
                )
            raise McpFault("off_spec", f"the MCP server answered {kind or 'no content type'}")
        return self._reply(_json(raw), ident, status)

    async def _from_stream(self, resp: aiohttp.ClientResponse, ident: int) -> dict[str, Any]:
        reader = SseReader(self.max_bytes)
        try:
            while chunk := await resp.content.readany():
                for data in reader.feed(chunk):
                    message = _json(data.encode())
                    if isinstance(message, dict) and message.get("id") == ident:
                        return self._reply(message, ident, resp.status)
        except SseTooLarge as exc:
            raise McpFault("too_large", f"the MCP server's stream: {exc}") from exc
        raise McpFault("off_spec", "the MCP server closed its stream without answering")

    @staticmethod
    def _reply(message: Any, ident: int, status: int) -> dict[str, Any]:
        if not isinstance(message, dict) or message.get("jsonrpc") != wire.JSONRPC:
            raise McpFault("off_spec", "the MCP server's answer is no JSON-RPC message")
        error = message.get("error")
        if isinstance(error, dict):
            code = error.get("code")
            raise McpRpcError(
                code if type(code) is int else wire.INTERNAL_ERROR,
                str(error.get("message", ""))[:1000],
                error.get("data"),
            )
        if status >= 400:
            raise McpFault(
                "backend_rejected", f"the MCP server refused the request (HTTP {status})"
            )
        if message.get("id") != ident:
            raise McpFault("off_spec", "the MCP server answered another request's id")
        result = message.get("result")
        if not isinstance(result, dict):
            raise McpFault("off_spec", "the MCP server's result is not an object")
        return result

    async def _read(self, resp: aiohttp.ClientResponse) -> bytes:
        if resp.content_length is not None and resp.content_length > self.max_bytes:
            raise McpFault("too_large", f"the MCP server's answer is over {self.max_bytes} bytes")
        parts: list[bytes] = []
        size = 0
        while chunk := await resp.content.read(READ_CHUNK):
            size += len(chunk)
            if size > self.max_bytes:
                raise McpFault(
                    "too_large", f"the MCP server's answer is over {self.max_bytes} bytes"
                )
            parts.append(chunk)
        return b"".join(parts)


def _json(raw: bytes) -> Any:
    try:
        return loads_bounded(raw)
    except JsonRefused as exc:
        raise McpFault("off_spec", "the MCP server's answer is not JSON") from exc


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


async def list_all(
    client: McpClient,
    conn: Connection,
    method: str,
    key: str,
    *,
    timeout_s: float,
    max_pages: int = 20,
) -> list[dict[str, Any]]:
    """Every item of a paginated list (``tools/list`` → ``tools``), at most ``max_pages`` pages."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(max_pages):
        params: dict[str, Any] = {"cursor": cursor} if cursor else {}
        page = await client.call(conn, method, params, timeout_s=timeout_s)
        found = page.get(key)
        if not isinstance(found, list):
            raise McpFault("off_spec", f"the MCP server's {method} result has no {key!r} list")
        items.extend(item for item in found if isinstance(item, dict))
        cursor = page.get("nextCursor") if isinstance(page.get("nextCursor"), str) else None
        if not cursor:
            return items
    return items
