"""The OpenAI-compatible endpoints: resolve the release, rewrite the model, relay the answer."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Final

import orjson
from aiohttp import web

from holdfast.errorshape import error_body
from holdfast.json_limits import DEFAULT_MAX_JSON_DEPTH, JsonRefused, loads_bounded
from holdfast.logs import get_logger
from sidecar.config.state import ConfigState, known_models
from sidecar.errors import (
    BodyTooLarge,
    InvalidRequest,
    ShuttingDown,
    SidecarError,
    UpstreamTimeout,
    UpstreamUnreachable,
    spec_for,
)
from sidecar.ops.metrics import SidecarMetrics
from sidecar.pins.pinning import Pinning
from sidecar.pipeline.exchange import Chain, Exchange, ExchangeFilter, Outcome
from sidecar.pipeline.sse import SseEvents
from sidecar.pipeline.stream_drain import GRACE, HALF_CLOSED_GRACE, QUIET, count_rest, hang_up
from sidecar.routing.flags import CATEGORY_HEADER, TENANT_HEADER
from sidecar.routing.resolve import Resolved
from sidecar.routing.session import session_id
from sidecar.settings.model import SidecarSettings
from sidecar.upstream.client import CONNECT_ERRORS, SidecarShutdown, Upstream, relayed_headers

log = get_logger(__name__)

RELEASE_HEADER: Final = "X-Holdfast-Release"
REVISION_HEADER: Final = "X-Holdfast-Config-Revision"
MIGRATED_FROM_HEADER: Final = "X-Holdfast-Migrated-From"
REQUEST_ID_KEY: Final = web.RequestKey("holdfast_request_id", str)
SSE_HEADERS: Final = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def served_by(resolved: Resolved) -> dict[str, str]:
    headers = {RELEASE_HEADER: resolved.release.name, REVISION_HEADER: str(resolved.revision)}
    if resolved.migrated_from is not None:
        headers[MIGRATED_FROM_HEADER] = resolved.migrated_from
    return headers


def parse_body(raw: bytes, max_depth: int = DEFAULT_MAX_JSON_DEPTH) -> dict[str, Any]:
    try:
        body = loads_bounded(raw, max_depth)
    except JsonRefused as exc:
        raise InvalidRequest(f"request body is {exc}") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a string", param="model")
    return body


def encode_body(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except TypeError:
        pass  # an integer beyond 64 bits (kept exact by the parser) or a lone surrogate
    try:
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError as exc:  # a lone surrogate ("\\ud800") survives json.loads
        raise InvalidRequest("request body has a lone UTF-16 surrogate in a string") from exc


class OpenAIProxy:
    def __init__(
        self,
        settings: SidecarSettings,
        config: ConfigState,
        upstream: Upstream,
        metrics: SidecarMetrics,
        pinning: Pinning,
        *,
        filters: Sequence[ExchangeFilter] = (),
        prepare: Sequence[Callable[[Exchange], Awaitable[None]]] = (),
    ) -> None:
        self.prepare = tuple(prepare)  # awaited before the filters open (they cannot await)
        self.settings = settings
        self.config = config
        self.upstream = upstream
        self.metrics = metrics
        self.pinning = pinning
        self.filters = tuple(filters)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/chat/completions", self.chat_completions),
            web.post("/v1/embeddings", self.embeddings),
            web.get("/v1/models", self.models),
        ]

    async def _read(self, request: web.Request) -> dict[str, Any]:
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise BodyTooLarge(f"request body is {request.content_length} bytes; limit {limit}")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise BodyTooLarge(f"request body is over the {limit}-byte limit") from exc
        return parse_body(raw, self.settings.limits.max_json_depth)

    async def _resolve(self, request: web.Request, body: dict[str, Any]) -> Resolved:
        session = session_id(request.headers, body)
        attributes = {
            name: value
            for name, header in (("tenant", TENANT_HEADER), ("category", CATEGORY_HEADER))
            if (value := request.headers.get(header))
        }
        snapshot, model = self.config.current, body["model"]
        # A pinned session is a dict hit with no await; only a first turn asks etcd.
        resolved = self.pinning.lookup(snapshot, model, session, attributes)
        if resolved is None:
            resolved = await self.pinning.first_turn(snapshot, model, session, attributes)
        return resolved

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._forward(request, "/chat/completions", "chat")

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        return await self._forward(request, "/embeddings", "embeddings")

    async def models(self, request: web.Request) -> web.Response:
        snapshot = self.config.current
        created = int(snapshot.applied_at) if snapshot else 0
        release = None
        if snapshot and snapshot.route:
            release = snapshot.releases.get(snapshot.route.stable)
        data = [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "holdfast",
                "holdfast_release": release.name if release else None,
                "holdfast_model": release.model if release else None,
            }
            for name in known_models(snapshot, self.settings.agent)
        ]
        return web.json_response({"object": "list", "data": data})

    async def _forward(self, request: web.Request, path: str, operation: str) -> web.StreamResponse:
        started = time.perf_counter()
        body = await self._read(request)
        resolved = await self._resolve(request, body)
        release = resolved.release
        body["model"] = release.model
        exchange = Exchange(
            operation=operation,
            body=body,
            resolved=resolved,
            request_id=request[REQUEST_ID_KEY],
            headers=request.headers,
            stream=operation == "chat" and body.get("stream") is True,
            started=started,
        )
        for wait in self.prepare:
            await wait(exchange)
        try:
            chain = Chain.open(self.filters, exchange)
        except SidecarError as exc:
            exc.headers.update(served_by(resolved))
            code = spec_for(exc).code
            self.metrics.request_finished(operation, release.name, code, exchange.elapsed())
            raise
        # A filter may have moved the exchange to another release (a budget's degrade).
        resolved = exchange.resolved
        release = resolved.release
        outcome = Outcome("error", None, 0.0, completed=False)
        try:
            payload = encode_body(exchange.body)
            async with self.upstream.post(
                release, path, payload, stream=exchange.stream, request_id=exchange.request_id
            ) as upstream:
                status = upstream.status
                is_sse = upstream.headers.get("Content-Type", "").startswith("text/event-stream")
                broken: str | None = None
                if exchange.stream and status == 200 and is_sse:
                    response, broken = await self._relay_stream(request, upstream, exchange, chain)
                else:
                    data = chain.body(status, await self.upstream.read_body(release, upstream))
                    headers = self._headers(exchange, upstream.headers)
                    headers["Content-Type"] = upstream.headers.get(
                        "Content-Type", "application/json"
                    )
                    response = web.Response(status=status, body=data, headers=headers)
                code = broken or ("ok" if status < 400 else f"upstream_{status // 100}xx")
                outcome = Outcome(code, status, exchange.elapsed(), status < 400 and not broken)
                return response
        except SidecarError as exc:
            exc.headers.update(served_by(resolved))
            outcome = Outcome(spec_for(exc).code, None, exchange.elapsed(), completed=False)
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            outcome = Outcome("client_disconnected", None, exchange.elapsed(), completed=False)
            raise
        finally:
            chain.close(outcome)
            self.metrics.request_finished(operation, release.name, outcome.code, exchange.elapsed())

    @staticmethod
    def _headers(exchange: Exchange, upstream_headers: Any) -> dict[str, str]:
        relayed = relayed_headers(upstream_headers)
        return served_by(exchange.resolved) | relayed | exchange.response_headers

    async def _relay_stream(
        self, request: web.Request, upstream: Any, exchange: Exchange, chain: Chain
    ) -> tuple[web.StreamResponse, str | None]:
        """Relay SSE as it arrives, never buffering a whole stream.

        Raw chunks go straight through unless a filter asked for whole events (to rewrite or
        drop some); then the stream is cut into events and each passes the filters first.
        """
        out = web.StreamResponse(
            status=200, headers=SSE_HEADERS | self._headers(exchange, upstream.headers)
        )
        events = SseEvents() if chain.wants_events else None
        chunks = upstream.content.iter_any().__aiter__()
        broken: str | None = None
        unseen: bytes | None = None  # read, not yet handed to the raw-chunk observers
        try:
            await out.prepare(request)
            while True:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except (TimeoutError, *CONNECT_ERRORS) as exc:
                    broken = await self._report_broken_stream(out, exchange.resolved, exc)
                    break
                unseen = chunk
                if events is None:
                    await out.write(chunk)
                else:
                    await self._write_events(out, events.feed(chunk), chain)
                unseen = None
                chain.chunk(chunk)
            if events is not None and (rest := events.rest()):
                await self._write_events(out, iter((rest,)), chain)
            await out.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            # The agent went away (a write failed, or its hang-up cancelled this handler, even
            # before the first chunk): count what the provider already sent, then let the
            # handler end, which closes the upstream connection.
            if unseen is not None:
                chain.chunk(unseen)
            wait = HALF_CLOSED_GRACE if hang_up(upstream) else None
            await count_rest(
                chunks,
                events,
                chain,
                content=upstream.content,
                grace=wait or GRACE,
                quiet=wait or QUIET,
            )
            raise
        return out, broken

    @staticmethod
    async def _write_events(out: web.StreamResponse, events: Iterator[bytes], chain: Chain) -> None:
        kept = [e for e in (chain.event(event) for event in events) if e is not None]
        if kept:
            await out.write(b"".join(kept))

    async def _report_broken_stream(
        self, out: web.StreamResponse, resolved: Resolved, exc: BaseException
    ) -> str:
        # Headers are gone already: report the failure in-band, the way OpenAI does.
        err: SidecarError
        if isinstance(exc, TimeoutError):
            err = UpstreamTimeout(
                f"provider stalled for over {self.settings.stream_idle_timeout:g}s"
            )
        elif isinstance(exc, SidecarShutdown):
            err = ShuttingDown(
                "the sidecar is shutting down and its drain timeout "
                f"({self.settings.drain_timeout:g}s) ran out mid-stream; retry"
            )
        else:
            err = UpstreamUnreachable(f"provider broke the stream: {type(exc).__name__}")
        log.warning("upstream_stream_broken", release=resolved.release.name, reason=err.message)
        spec = spec_for(err)
        await out.write(f"data: {json.dumps(error_body(err.message, spec))}\n\n".encode())
        return spec.code
