"""Every dialect's endpoints: parse, resolve the release, rewrite the model, relay the answer.

One handler for every registered dialect (holdfast.dialects): what differs between APIs is read
through the dialect, so this path never names a wire field.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final, Protocol

from aiohttp import web

from holdfast.dialects import DIALECTS, Dialect, RequestRefused, RequestView
from holdfast.keyspace import Release
from holdfast.logs import get_logger
from sidecar.config import ConfigState
from sidecar.errors import (
    BodyTooLarge,
    InvalidRequest,
    NoEmbeddingModel,
    ShuttingDown,
    SidecarError,
    UpstreamTimeout,
    UpstreamUnreachable,
    UpstreamWrongDialect,
    spec_for,
)
from sidecar.pins import Pinning
from sidecar.pipeline.body import encode_body, parse_body
from sidecar.pipeline.exchange import SUPERSEDED, Chain, Exchange, ExchangeFilter, Outcome
from sidecar.pipeline.stream_drain import GRACE, HALF_CLOSED_GRACE, QUIET, count_rest, hang_up
from sidecar.pipeline.stream_feed import StreamFeed
from sidecar.routing import CATEGORY_HEADER, TENANT_HEADER, Resolved, session_id
from sidecar.settings import SidecarSettings
from sidecar.upstream import CONNECT_ERRORS, SidecarShutdown, Upstream, relayed_headers

log = get_logger(__name__)

RELEASE_HEADER: Final = "X-Holdfast-Release"
REVISION_HEADER: Final = "X-Holdfast-Config-Revision"
MIGRATED_FROM_HEADER: Final = "X-Holdfast-Migrated-From"
INDEX_VERSION_HEADER: Final = "X-Holdfast-Index-Version"
REQUEST_ID_KEY: Final = web.RequestKey("holdfast_request_id", str)
DIALECT_KEY: Final = web.RequestKey("holdfast_dialect", Dialect)
SSE_HEADERS: Final = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class StateRouter(Protocol):
    """Routes requests that continue provider-held state (sidecar.state.StateRouting)."""

    async def route(
        self,
        headers: Mapping[str, str],
        dialect: Dialect,
        view: RequestView,
        attributes: Mapping[str, str],
        request_id: str,
    ) -> Resolved | str | None:
        """The request's resolution; or the session it belongs to; or None (route it as any
        other request)."""
        ...


class RequestCounter(Protocol):
    """Where each finished request is counted (sidecar.ops.metrics.SidecarMetrics)."""

    def request_finished(
        self, operation: str, release: str, outcome: str, seconds: float
    ) -> None: ...


class Superseded(Exception):
    """A first turn sent on this sidecar's decision that etcd settled to another release."""

    def __init__(self, release: str) -> None:
        super().__init__(release)
        self.release = release


def served_by(resolved: Resolved) -> dict[str, str]:
    headers = {RELEASE_HEADER: resolved.release.name, REVISION_HEADER: str(resolved.revision)}
    if resolved.migrated_from is not None:
        headers[MIGRATED_FROM_HEADER] = resolved.migrated_from
    if resolved.release.index_version:
        headers[INDEX_VERSION_HEADER] = resolved.release.index_version
    return headers


def served_model(release: Release, operation: str, resolved: Resolved) -> str:
    """The concrete model a release serves ``operation`` with; a release that names no
    embedding model refuses embeddings rather than send its chat model (another vector space)."""
    model = release.model_for(operation)
    if not model:
        err = NoEmbeddingModel(
            f"release {release.name!r} names no embedding model, so it serves no embeddings: "
            "create a release with `holdfastctl release create ... --embedding-model MODEL`",
            param="model",
        )
        err.headers.update(served_by(resolved))
        raise err
    return model


class Proxy:
    def __init__(
        self,
        settings: SidecarSettings,
        config: ConfigState,
        upstream: Upstream,
        metrics: RequestCounter,
        pinning: Pinning,
        *,
        filters: Sequence[ExchangeFilter] = (),
        prepare: Sequence[Callable[[Exchange], Awaitable[None]]] = (),
        state: StateRouter | None = None,
    ) -> None:
        self.state = state
        self.prepare = tuple(prepare)  # awaited before the filters open (they cannot await)
        self.settings = settings
        self.config = config
        self.upstream = upstream
        self.metrics = metrics
        self.pinning = pinning
        self.filters = tuple(filters)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post(path, self._handler(dialect)) for dialect in DIALECTS for path in dialect.paths
        ]

    def _handler(self, dialect: Dialect) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def handle(request: web.Request) -> web.StreamResponse:
            try:
                return await self._forward(request, dialect)
            except Superseded as exc:
                # Another sidecar pinned this session first, to another release: nothing was
                # relayed; the table holds etcd's pin now, so the request is served there.
                log.info("first_turn_superseded", release=exc.release)
                return await self._forward(request, dialect)

        return handle

    async def _read(self, request: web.Request, dialect: Dialect) -> RequestView:
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise BodyTooLarge(f"request body is {request.content_length} bytes; limit {limit}")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise BodyTooLarge(f"request body is over the {limit}-byte limit") from exc
        body = parse_body(raw, self.settings.limits.max_json_depth)
        try:
            return dialect.parse(body)
        except RequestRefused as exc:
            raise InvalidRequest(str(exc), param=exc.param) from exc

    async def _resolve(
        self, request: web.Request, dialect: Dialect, view: RequestView
    ) -> tuple[Resolved, asyncio.Task[Resolved] | None]:
        attributes = {
            name: value
            for name, header in (("tenant", TENANT_HEADER), ("category", CATEGORY_HEADER))
            if (value := request.headers.get(header))
        }
        session: str | None = None
        if self.state is not None:
            routed = await self.state.route(
                request.headers, dialect, view, attributes, request[REQUEST_ID_KEY]
            )
            if isinstance(routed, Resolved):
                return routed, None
            session = routed
        if session is None:
            session = session_id(request.headers, view.session_hint, dialect.session_headers)
        snapshot, model = self.config.current, view.model
        # A pinned session is a dict hit with no await; a first turn goes out at once on this
        # sidecar's decision while etcd settles it (``_forward`` waits for that before the
        # agent sees a byte). A release of another provider kind is refused.
        speaks = dialect.provider_api
        resolved = self.pinning.lookup(snapshot, model, session, attributes, speaks)
        if resolved is not None:
            return resolved, None
        speculative = self.pinning.speculate(snapshot, model, session, attributes, speaks)
        if speculative is None:
            first = await self.pinning.first_turn(snapshot, model, session, attributes, speaks)
            return first, None
        return speculative

    async def _forward(self, request: web.Request, dialect: Dialect) -> web.StreamResponse:
        started = time.perf_counter()
        request[DIALECT_KEY] = dialect
        view = await self._read(request, dialect)
        resolved, settling = await self._resolve(request, dialect, view)
        release = resolved.release
        view.set_model(served_model(release, dialect.operation, resolved))
        exchange = Exchange(
            dialect=dialect,
            request=view,
            resolved=resolved,
            request_id=request[REQUEST_ID_KEY],
            headers=request.headers,
            query=request.rel_url.raw_query_string,
            decoder=dialect.stream_decoder() if view.stream else None,
            started=started,
        )
        operation = dialect.operation
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
            payload = encode_body(view.body)
            async with self.upstream.post(
                release,
                dialect.upstream_path,
                payload,
                stream=exchange.stream,
                request_id=exchange.request_id,
                agent_headers=request.headers,
                query=exchange.query,
                extra_headers=exchange.upstream_headers,
            ) as upstream:
                if settling is not None:  # a first turn: etcd's word before the agent's first byte
                    settled = await asyncio.shield(settling)
                    if settled.release.name != release.name:
                        raise Superseded(settled.release.name)
                status = upstream.status
                is_sse = upstream.headers.get("Content-Type", "").startswith("text/event-stream")
                broken: str | None = None
                if exchange.stream and status == 200 and is_sse:
                    response, broken = await self._relay_stream(request, upstream, exchange, chain)
                else:
                    data = await self.upstream.read_body(release, upstream)
                    answer = None
                    if status < 400 and (chain or dialect.checks_answers):
                        answer = dialect.decode_body(data)
                    if answer is None and 200 <= status < 300 and dialect.checks_answers:
                        raise UpstreamWrongDialect(
                            f"the provider of release {release.name!r} answered HTTP {status} "
                            f"with a body that is not a {dialect.name} answer (another API at "
                            f"{release.base_url}? its provider kind is {release.provider})"
                        )
                    if chain:
                        chain.answer(status, answer)
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
        except Superseded:
            outcome = Outcome(SUPERSEDED, None, exchange.elapsed(), completed=False)
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            outcome = Outcome("client_disconnected", None, exchange.elapsed(), completed=False)
            raise
        finally:
            chain.close(outcome)
            if outcome.code != SUPERSEDED:
                elapsed = exchange.elapsed()
                self.metrics.request_finished(operation, release.name, outcome.code, elapsed)

    @staticmethod
    def _headers(exchange: Exchange, upstream_headers: Any) -> dict[str, str]:
        relayed = relayed_headers(upstream_headers)
        return served_by(exchange.resolved) | relayed | exchange.response_headers

    async def _relay_stream(
        self, request: web.Request, upstream: Any, exchange: Exchange, chain: Chain
    ) -> tuple[web.StreamResponse, str | None]:
        """Relay SSE as it arrives, never buffering a whole stream: each chunk's whole events
        pass the filters (decoded once by the dialect) and go out in one write; a chain with
        no observers relays the raw chunks."""
        out = web.StreamResponse(
            status=200, headers=SSE_HEADERS | self._headers(exchange, upstream.headers)
        )
        decoder = exchange.decoder or exchange.dialect.stream_decoder()
        stream = StreamFeed(chain, decoder)
        chunks = upstream.content.iter_any().__aiter__()
        broken: str | None = None
        try:
            await out.prepare(request)
            while True:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except (TimeoutError, *CONNECT_ERRORS) as exc:
                    broken = await self._report_broken_stream(out, exchange, exc)
                    break
                if exchange.first_byte is None:
                    exchange.first_byte = exchange.elapsed()
                data = stream.feed(chunk) if chain else chunk
                if data:
                    await out.write(data)
                if stream.foreign:
                    broken = await self._report_foreign_stream(out, exchange)
                    break
            if chain:
                if rest := stream.rest():
                    await out.write(rest)
                if broken is None:
                    stream.end()
            await out.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            # The agent went away (a write failed, or its hang-up cancelled this handler, even
            # before the first chunk): count what the provider already sent, then let the
            # handler end, which closes the upstream connection.
            wait = HALF_CLOSED_GRACE if hang_up(upstream) else None
            await count_rest(
                chunks, stream, content=upstream.content, grace=wait or GRACE, quiet=wait or QUIET
            )
            raise
        return out, broken

    async def _report_foreign_stream(self, out: web.StreamResponse, exchange: Exchange) -> str:
        release = exchange.resolved.release
        err = UpstreamWrongDialect(
            f"the provider of release {release.name!r} streamed events that are not "
            f"{exchange.dialect.name} events (another API at {release.base_url}? its provider "
            f"kind is {release.provider}); the stream was ended"
        )
        log.warning("upstream_stream_foreign", release=release.name, dialect=exchange.dialect.name)
        spec = spec_for(err)
        await out.write(exchange.dialect.stream_error(err.message, spec.kind, spec.code))
        return spec.code

    async def _report_broken_stream(
        self, out: web.StreamResponse, exchange: Exchange, exc: BaseException
    ) -> str:
        # Headers are gone already: report the failure in-band, the way the dialect does.
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
        release = exchange.resolved.release.name
        log.warning("upstream_stream_broken", release=release, reason=err.message)
        spec = spec_for(err)
        await out.write(exchange.dialect.stream_error(err.message, spec.kind, spec.code))
        return spec.code
