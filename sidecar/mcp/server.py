"""``/mcp/{toolset}``: the sidecar as an MCP server over Streamable HTTP, both eras.

A POST is routed by its ``MCP-Protocol-Version`` header (``holdfast.mcp.versions``): the modern
era (2026-07-28) answers one self-describing request per POST, ``server/discover`` and
``subscriptions/listen`` included; the handshake era (2024-11-05 to 2025-11-25) keeps sessions
opened by ``initialize`` under ``Mcp-Session-Id``, a GET stream for server-initiated messages,
DELETE to end, and batches where the session's revision allows them (2025-03-26). Every answer
is JSON-RPC -- errors included, with the HTTP status the transport gives them -- and never the
sidecar's OpenAI-shaped errors.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

import orjson
from aiohttp import web

from holdfast import __version__
from holdfast.keyspace.keys import ID_RE, NAME_RE
from holdfast.logs import get_logger
from holdfast.mcp import versions, wire
from holdfast.mcp.sse import KEEPALIVE, frame
from sidecar.config import ConfigSnapshot
from sidecar.mcp import backends as backend_pool
from sidecar.mcp.methods import Context, Methods, RpcProblem
from sidecar.mcp.metrics import McpMetrics
from sidecar.mcp.sessions import McpSession, SessionBook, SessionProblem
from sidecar.mcp.streams import UNPINNED, Stream, Streams
from sidecar.pipeline import REQUEST_ID_KEY
from sidecar.routing.session import SESSION_HEADER as HOLDFAST_SESSION

log = get_logger(__name__)

SERVER_INFO: Final = {"name": "holdfast-sidecar", "version": __version__}
CAPABILITIES: Final = {
    "tools": {"listChanged": True},
    "prompts": {"listChanged": True},
    "resources": {},
}
CACHEABLE: Final = frozenset(
    {"tools/list", "prompts/list", "resources/list", "resources/templates/list", "resources/read"}
)
PINNED_TTL_MS: Final = 60_000  # a pinned list changes only by migration, which is notified
KEEPALIVE_S: Final = 15.0
PARAM_PREFIX: Final = versions.PARAM_HEADER_PREFIX.lower()


def _reply(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _error(
    status: int, ident: wire.RequestId | None, code: int, text: str, data: Any = None
) -> web.Response:
    return _reply(wire.error(ident, code, text, data), status)


class McpServer:
    def __init__(
        self,
        methods: Methods,
        metrics: McpMetrics,
        *,
        max_body_bytes: int,
        max_json_depth: int,
        sessions: SessionBook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.methods = methods
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth
        self.sessions = sessions if sessions is not None else SessionBook()
        self.streams = Streams()
        self.clock = clock
        self._closing = asyncio.Event()
        metrics.bind(lambda: len(self.sessions), lambda: len(self.streams))

    def routes(self) -> list[web.RouteDef]:
        path = "/mcp/{toolset}"
        return [web.post(path, self.post), web.get(path, self.get), web.delete(path, self.delete)]

    async def lifecycle(self, _app: web.Application) -> AsyncIterator[None]:
        """For ``app.cleanup_ctx``: backends live as long as the app; streams end before."""
        await self.methods.backends.start()
        yield
        self._closing.set()
        await self.methods.backends.close()

    # -- what the watch tells ---------------------------------------------------------------

    def pin_changed(self, session: str) -> None:
        """The pin table adopted etcd's pin of ``session``: a migration reaches its streams."""
        if not self.streams.watching(session):
            return
        entry = self.methods.pinning.table.get(session)
        if entry is not None:
            self._announce(session, entry.pin.release)

    def config_changed(self, snapshot: ConfigSnapshot) -> None:
        if self.streams.watching(UNPINNED) and snapshot.route is not None:
            self._announce(UNPINNED, snapshot.route.stable)

    def _announce(self, key: str, release: str) -> None:
        for method in self.streams.release_changed(key, release):
            self.metrics.notifications.labels(self.methods.agent, method).inc()
            log.info("mcp_list_changed_sent", method=method, release=release)

    # -- the request ------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> bytes | web.Response:
        too_large = _error(
            413, None, wire.INVALID_REQUEST,
            f"the MCP message is over the sidecar's {self.max_body_bytes}-byte limit",
        )  # fmt: skip
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            return too_large
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            return too_large

    @staticmethod
    def _owner(request: web.Request) -> str | web.Response | None:
        owner = request.headers.get(HOLDFAST_SESSION)
        if owner is not None and not ID_RE.fullmatch(owner):
            return _error(
                400, None, wire.INVALID_REQUEST,
                f"header {HOLDFAST_SESSION} is not a valid session id (1-128 of A-Z a-z 0-9 "
                "._:@-, starting with a letter or digit)",
            )  # fmt: skip
        return owner

    def _context(
        self, request: web.Request, toolset: str, pin_key: str | None, conn_key: str, era: str
    ) -> Context:
        extra = {k: v for k, v in request.headers.items() if k.lower().startswith(PARAM_PREFIX)}
        return Context(toolset, pin_key, conn_key, era, request.get(REQUEST_ID_KEY, ""), extra)

    async def post(self, request: web.Request) -> web.StreamResponse:
        toolset = request.match_info["toolset"]
        if not NAME_RE.fullmatch(toolset):
            return _error(404, None, wire.INVALID_REQUEST, f"no MCP tool set {toolset!r:.80}")
        raw = await self._body(request)
        if isinstance(raw, web.Response):
            return raw
        owner = self._owner(request)
        if isinstance(owner, web.Response):
            return owner
        try:
            body = wire.parse(raw, max_depth=self.max_json_depth)
        except wire.WireError as exc:
            return _error(400, None, exc.code, exc.message)
        era = versions.era_of(request.headers.get(versions.PROTOCOL_VERSION_HEADER))
        if era == "modern":
            return await self._modern(request, toolset, body, owner)
        return await self._handshake(request, toolset, body, owner)

    async def _dispatch(self, ctx: Context, req: wire.Request) -> dict[str, Any]:
        method = self.methods.table.get(req.method)
        if method is None and ctx.era == "handshake" and req.method in ("ping", "logging/setLevel"):
            reply = wire.result(req.id, {})
        elif method is None:
            reply = wire.error(req.id, wire.METHOD_NOT_FOUND, f"Method not found: {req.method}")
        else:
            try:
                reply = wire.result(req.id, await method(ctx, req.params))
            except RpcProblem as exc:
                reply = wire.error(req.id, exc.code, exc.message, exc.data)
        err = reply.get("error")
        self.metrics.requests.labels(
            self.methods.agent, ctx.toolset, ctx.era,
            req.method if method is not None else "unknown",
            "ok" if err is None else str(err["code"]),
        ).inc()  # fmt: skip
        return reply

    # -- modern era ---------------------------------------------------------------------------

    async def _modern(
        self, request: web.Request, toolset: str, body: wire.Body, owner: str | None
    ) -> web.StreamResponse:
        if body.batch:
            return _error(
                400, None, wire.INVALID_REQUEST,
                "a 2026-07-28 POST carries one JSON-RPC message; batches are not part of it",
            )  # fmt: skip
        message = body.messages[0]
        if isinstance(message, wire.Invalid):
            return _error(400, message.id, message.code, message.message)
        if not isinstance(message, wire.Request):
            return web.Response(status=202)  # no client notification means anything here
        checked = versions.check_envelope(message, request.headers)
        if isinstance(checked, versions.Refusal):
            status = wire.HTTP_STATUS.get(checked.code, 400)
            return _error(status, message.id, checked.code, checked.message, checked.data)
        ctx = self._context(request, toolset, owner, owner or backend_pool.SHARED, "modern")
        if message.method == "server/discover":
            return _reply(wire.result(message.id, _modern_result("server/discover", {
                "supportedVersions": [*versions.MODERN_VERSIONS, *versions.HANDSHAKE_VERSIONS],
                "capabilities": CAPABILITIES,
            }, owner)))  # fmt: skip
        if message.method == "subscriptions/listen":
            return await self._listen(request, ctx, message)
        reply = await self._dispatch(ctx, message)
        err = reply.get("error")
        if err is not None:
            return _reply(reply, wire.HTTP_STATUS.get(err["code"], 200))
        reply["result"] = _modern_result(message.method, reply["result"], owner)
        return _reply(reply)

    async def _listen(
        self, request: web.Request, ctx: Context, message: wire.Request
    ) -> web.StreamResponse:
        wanted = message.params.get("notifications")
        wanted = wanted if isinstance(wanted, dict) else {}
        flags = (("tools", "toolsListChanged"), ("prompts", "promptsListChanged"))
        kinds = frozenset(kind for kind, flag in flags if wanted.get(flag) is True)
        resolved = await self._resolved_or_none(ctx.pin_key)
        stream = Stream(ctx.pin_key or UNPINNED, resolved, kinds, subscription=message.id)
        ack = {f"{k}ListChanged": True for k in sorted(kinds)}
        meta = {versions.SUBSCRIPTION_ID_META: message.id}
        first = wire.notification(
            "notifications/subscriptions/acknowledged", {"_meta": meta, "notifications": ack}
        )
        self.metrics.requests.labels(
            self.methods.agent, ctx.toolset, "modern", "subscriptions/listen", "ok"
        ).inc()
        return await self._stream(request, stream, first, closing=wire.result(
            message.id, {"resultType": "complete", "_meta": meta}
        ))  # fmt: skip

    async def _resolved_or_none(self, pin_key: str | None) -> str:
        try:
            return (await self.methods.resolve(pin_key)).release.name
        except RpcProblem:
            return ""

    async def _stream(
        self,
        request: web.Request,
        stream: Stream,
        first: dict[str, Any] | None,
        *,
        closing: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache, no-transform",
                **(headers or {}),
            }
        )
        await response.prepare(request)
        self.streams.add(stream)
        closed = asyncio.ensure_future(self._closing.wait())
        try:
            if first is not None:
                await response.write(frame(first))
            while not self._closing.is_set():
                getter = asyncio.ensure_future(stream.queue.get())
                done, _ = await asyncio.wait({getter, closed}, timeout=KEEPALIVE_S,
                                             return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                if getter in done:
                    await response.write(frame(getter.result()))
                    continue
                getter.cancel()
                if closed not in done:
                    await response.write(KEEPALIVE)
            if closing is not None:
                await response.write(frame(closing))
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the client went away: its stream ends with it
        finally:
            closed.cancel()
            self.streams.remove(stream)
        return response

    # -- handshake era ------------------------------------------------------------------------

    async def _handshake(
        self, request: web.Request, toolset: str, body: wire.Body, owner: str | None
    ) -> web.StreamResponse:
        inits = [
            m for m in body.messages if isinstance(m, wire.Request) and m.method == "initialize"
        ]
        if inits and body.batch:
            return _error(400, inits[0].id, wire.INVALID_REQUEST, "initialize is never batched")
        if inits:
            return await self._initialize(request, toolset, inits[0], owner)
        session = await self._session(request, toolset, owner)
        if isinstance(session, web.Response):
            return session
        if body.batch and not versions.batching(session.version):
            return _error(
                400, None, wire.INVALID_REQUEST,
                f"JSON-RPC batches are not part of MCP {session.version} (only 2025-03-26)",
            )  # fmt: skip
        ctx = self._context(request, toolset, session.pin_key, session.id, "handshake")
        replies: list[dict[str, Any]] = []
        for message in body.messages:
            if isinstance(message, wire.Request):
                replies.append(await self._dispatch(ctx, message))
            elif isinstance(message, wire.Invalid):
                replies.append(wire.error(message.id, message.code, message.message))
            elif (
                isinstance(message, wire.Notification)
                and message.method == "notifications/initialized"
            ):
                session.move("ready")
        if not replies:
            return web.Response(status=202)
        if body.batch:
            return _reply(replies)
        return _reply(replies[0])

    async def _initialize(
        self, request: web.Request, toolset: str, req: wire.Request, owner: str | None
    ) -> web.Response:
        version = versions.negotiate(req.params.get("protocolVersion"))
        session = self.sessions.open(toolset, version, owner, self.clock())
        info = req.params.get("clientInfo")
        session.client_info = info if isinstance(info, dict) else {}
        try:
            resolved = await self.methods.resolve(session.pin_key)
        except RpcProblem as exc:
            self.sessions.close(session.id)
            return _error(503, req.id, exc.code, exc.message)
        self.metrics.requests.labels(
            self.methods.agent, toolset, "handshake", "initialize", "ok"
        ).inc()
        log.info(
            "mcp_session_opened", toolset=toolset, version=version,
            release=resolved.release.name, client=str(session.client_info.get("name", ""))[:80],
        )  # fmt: skip
        result = {
            "protocolVersion": version,
            "capabilities": CAPABILITIES,
            "serverInfo": SERVER_INFO,
        }
        return _reply(wire.result(req.id, result), headers={versions.SESSION_HEADER: session.id})

    async def _session(
        self, request: web.Request, toolset: str, owner: str | None
    ) -> McpSession | web.Response:
        ident = request.headers.get(versions.SESSION_HEADER)
        if ident is None:
            return _error(
                400, None, wire.INVALID_REQUEST,
                f"the {versions.SESSION_HEADER} header is required: send initialize first",
            )  # fmt: skip
        try:
            session = self.sessions.find(ident, toolset, owner, self.clock())
        except SessionProblem as exc:
            code = wire.SESSION_NOT_OWNED if exc.status == 403 else wire.INVALID_REQUEST
            return _error(exc.status, None, code, exc.message)
        if session is None:
            revived = self._revive(request, ident, toolset, owner)
            if isinstance(revived, web.Response):
                return revived
            session = revived
        header = request.headers.get(versions.PROTOCOL_VERSION_HEADER)
        if header is not None and header != session.version:
            return _error(
                400, None, wire.INVALID_REQUEST,
                f"{versions.PROTOCOL_VERSION_HEADER} {header!r:.40} is not this session's "
                f"revision {session.version}",
            )  # fmt: skip
        return session

    def _revive(
        self, request: web.Request, ident: str, toolset: str, owner: str | None
    ) -> McpSession | web.Response:
        """A session this sidecar never held (another sidecar of the agent opened it, or this
        one restarted): served again when its pin says it exists, so it keeps its release, and
        only to the X-Holdfast-Session its id was minted for."""
        try:
            self.sessions.check_revival(ident, toolset, owner)
        except SessionProblem as exc:
            code = wire.SESSION_NOT_OWNED if exc.status == 403 else wire.INVALID_REQUEST
            return _error(exc.status, None, code, exc.message)
        if owner is None and self.methods.pinning.table.get(ident) is None:
            return _error(404, None, wire.INVALID_REQUEST, "no such MCP session; initialize")
        header = request.headers.get(versions.PROTOCOL_VERSION_HEADER)
        version = header if header in versions.HANDSHAKE_VERSIONS else versions.LATEST_HANDSHAKE
        session = self.sessions.open(toolset, version, owner, self.clock(), session_id=ident)
        session.move("ready")
        log.info("mcp_session_revived", toolset=toolset)
        return session

    async def get(self, request: web.Request) -> web.StreamResponse:
        toolset = request.match_info["toolset"]
        header = request.headers.get(versions.PROTOCOL_VERSION_HEADER)
        if versions.era_of(header) == "modern" or not NAME_RE.fullmatch(toolset):
            return _error(
                405, None, wire.INVALID_REQUEST,
                "no GET stream in MCP 2026-07-28: use subscriptions/listen",
            )  # fmt: skip
        if "text/event-stream" not in request.headers.get("Accept", ""):
            return _error(406, None, wire.INVALID_REQUEST, "the GET stream is text/event-stream")
        owner = self._owner(request)
        if isinstance(owner, web.Response):
            return owner
        session = await self._session(request, toolset, owner)
        if isinstance(session, web.Response):
            return session
        release = await self._resolved_or_none(session.pin_key)
        stream = Stream(session.pin_key, release, frozenset({"tools", "prompts"}))
        return await self._stream(request, stream, None)

    async def delete(self, request: web.Request) -> web.Response:
        toolset = request.match_info["toolset"]
        owner = self._owner(request)
        if isinstance(owner, web.Response):
            return owner
        session = await self._session(request, toolset, owner)
        if isinstance(session, web.Response):
            return session
        self.sessions.close(session.id)
        await self.methods.backends.end(session.id)
        return web.Response(status=200)

    def status(self) -> dict[str, Any]:
        return {
            **self.sessions.status(),
            "streams": len(self.streams),
            "notifications_sent": self.streams.sent,
            **self.methods.backends.status(),
            "drift": self.methods.drift.status(),
            "tool_call_budgets": (
                self.methods.budget.status() if self.methods.budget is not None else []
            ),
        }


def _modern_result(method: str, result: dict[str, Any], owner: str | None) -> dict[str, Any]:
    """A result as 2026-07-28 wants it: ``resultType``, the server's identity and, for the
    lists, how long a client may keep it (private: it is this session's view)."""
    meta = dict(result.get("_meta") or {})
    meta[versions.SERVER_INFO_META] = SERVER_INFO
    shaped = {**result, "resultType": "complete", "_meta": meta}
    if method in CACHEABLE or method == "server/discover":
        shaped["ttlMs"] = PINNED_TTL_MS if owner is not None else 0
        shaped["cacheScope"] = "private"
    return shaped
