"""aiohttp app of the fake upstream: the OpenAI endpoints (``/v1``), Anthropic's Messages
(``/v1/messages``, ``/v1/messages/count_tokens``), plus ``/_control`` (holdfast.fakellm.control).

Request handling stays cheap (one JSON parse, one hash, pre-encoded chunk heads) because the
same process is the upstream of throughput benchmarks; nothing here logs per request.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from holdfast_devtools.fakellm import anthropic, protocol, responses
from holdfast_devtools.fakellm.behaviour import Behaviour, BehaviourTable, ModelStats
from holdfast_devtools.fakellm.control import Control, json_response
from holdfast_devtools.fakellm.generate import ChatRequest, Reply, compose_reply, embedding
from holdfast_devtools.fakellm.protocol import ApiError
from holdfast_devtools.fakellm.responses import Draft, Events

DEFAULT_MODELS: Final = ("gpt-4o-mini", "gpt-4o", "text-embedding-3-small")
DEFAULT_REQUEST_LOG_SIZE: Final = 200
MAX_BODY_BYTES: Final = 16 * 1024 * 1024
MAX_SEEN_MODELS: Final = 1000  # bounds memory if a benchmark invents model names
STALL_SECONDS: Final = 3600.0  # outlives any test; a hang-up or shutdown ends it sooner
SHUTDOWN_TIMEOUT: Final = 2.0  # grace for in-flight requests on SIGTERM
RECORDED_HEADERS: Final = frozenset(
    {"accept-encoding", "authorization", "user-agent", "x-request-id", "traceparent", "tracestate"}
    | {"x-api-key", "anthropic-version", "anthropic-beta"}
)
ANTHROPIC_PREFIX: Final = "/v1/messages"
RECORDED_HEADER_PREFIX: Final = "x-holdfast-"
OWNER: Final = "holdfast-fakellm"
SSE_HEADERS: Final = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True, kw_only=True)
class FakeSettings:
    defaults: Behaviour = field(default_factory=Behaviour)
    # when set, /v1 needs "Authorization: Bearer <key>" (Anthropic's endpoints: "x-api-key: <key>")
    require_key: str | None = None
    models: tuple[str, ...] = DEFAULT_MODELS
    request_log_size: int = DEFAULT_REQUEST_LOG_SIZE


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error leaves in its API's shape (OpenAI's; Anthropic's under /v1/messages),
    aiohttp's own 404/405/413 included."""
    try:
        return await handler(request)
    except ApiError as exc:
        return json_response(exc.body(), status=exc.status, headers=exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if request.path.startswith(ANTHROPIC_PREFIX):
            kind = "request_too_large" if exc.status == 413 else "invalid_request_error"
            error: ApiError = anthropic.AnthropicError(exc.reason, kind=kind)
        else:
            error = ApiError(exc.reason, code=None)
        return json_response(error.body(), status=exc.status)


class FakeLLM:
    """One fake upstream: behaviour table, stats, request log and the models it has seen."""

    def __init__(self, settings: FakeSettings) -> None:
        self.settings = settings
        self.behaviours = BehaviourTable(settings.defaults)
        self.requests: deque[dict[str, object]] = deque(maxlen=settings.request_log_size)
        self.models: dict[str, None] = dict.fromkeys(settings.models)
        key = settings.require_key
        self._expected_auth = None if key is None else f"Bearer {key}".encode()
        self._sequence = 0
        # Ids unique across fake processes, as a real provider's are: a test with two fakes
        # must not see one issue the other's response ids.
        self._token = secrets.token_hex(4)
        self.stored: OrderedDict[str, Stored] = OrderedDict()
        self._closing = asyncio.Event()

    async def _stall(self) -> bool:
        """Go silent until shutdown (False) or STALL_SECONDS pass (True: carry on)."""
        try:
            await asyncio.wait_for(self._closing.wait(), STALL_SECONDS)
        except TimeoutError:
            return True
        return False

    async def _on_shutdown(self, app: web.Application) -> None:
        self._closing.set()  # stalled streams end now rather than hold up the exit

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_post("/v1/responses", self.create_response)
        app.router.add_get("/v1/responses/{id}", self.get_response)
        app.router.add_delete("/v1/responses/{id}", self.delete_response)
        app.router.add_post("/v1/responses/{id}/cancel", self.cancel_response)
        app.router.add_get("/v1/responses/{id}/input_items", self.input_items)
        app.router.add_get("/v1/models", self.list_models)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/messages/count_tokens", self.count_tokens)
        Control(self.behaviours, self.requests).add_routes(app.router)
        app.on_shutdown.append(self._on_shutdown)
        return app

    async def _admit(self, request: web.Request, *, anthropic_api: bool = False) -> object:
        """Record the request, check its key, and return its JSON body."""
        raw = await request.read()
        try:
            body: object = json.loads(raw) if raw else None
            malformed = False
        except ValueError:
            body, malformed = None, True
        self.requests.append(
            {
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "model": body.get("model") if isinstance(body, dict) else None,
                "headers": _recorded_headers(request),
                "body": body,
            }
        )
        expected = self._expected_auth
        if anthropic_api:
            anthropic.check_headers(request.headers, self.settings.require_key)
        elif expected is not None:
            got = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
            if not hmac.compare_digest(got, expected):
                raise ApiError("missing or incorrect API key", code="invalid_api_key", status=401)
        if malformed:
            if anthropic_api:
                raise anthropic.invalid("request body is not valid JSON")
            raise ApiError("request body is not valid JSON", code="invalid_json")
        return body

    def _begin(self, model: str, *, anthropic_api: bool = False) -> tuple[Behaviour, ModelStats]:
        """Count a valid request; raise the injected error when the model's schedule says so."""
        if model not in self.models and len(self.models) < MAX_SEEN_MODELS:
            self.models[model] = None
        behaviour, stats, fails = self.behaviours.admit(model)
        if fails:
            if anthropic_api:
                raise anthropic.injected_error(behaviour)
            raise protocol.injected_error(behaviour)
        return behaviour, stats

    def _next_id(self, prefix: str) -> str:
        self._sequence += 1
        return f"{prefix}-fake{self._sequence:012d}"

    async def chat(self, request: web.Request) -> web.StreamResponse:
        chat = protocol.parse_chat(await self._admit(request))
        behaviour, stats = self._begin(chat.model)
        reply = compose_reply(
            chat, length=behaviour.length_for(chat.user_text), tool_calls_on=behaviour.tool_calls
        )
        stats.prompt_tokens += chat.prompt_tokens
        if behaviour.raw_body:
            return await self._raw(request, behaviour.raw_body.encode(), stream=chat.stream)
        stats.in_flight += 1
        try:
            if chat.stream:
                return await self._stream(request, chat, reply, behaviour, stats)
            if behaviour.latency_ms:
                await asyncio.sleep(behaviour.latency_ms / 1000)
            stats.completion_tokens += reply.completion_tokens
            with_usage = not behaviour.omit_usage
            body = protocol.completion_body(
                self._next_id("chatcmpl"), chat, reply, with_usage=with_usage
            )
            return json_response(body)
        finally:
            stats.in_flight -= 1

    async def _stream(
        self,
        request: web.Request,
        chat: ChatRequest,
        reply: Reply,
        behaviour: Behaviour,
        stats: ModelStats,
    ) -> web.StreamResponse:
        frames = protocol.ChunkFrames(self._next_id("chatcmpl"), chat.model)
        tail = frames.delta({}, reply.finish_reason)
        if chat.include_usage and not behaviour.omit_usage:
            tail += frames.usage(chat.prompt_tokens, reply.completion_tokens)
        return await self._send_stream(
            request,
            frames.delta({"role": "assistant", "content": ""}),
            [frames.delta(delta) for delta in reply.deltas],
            tail + protocol.DONE_FRAME,
            behaviour,
            stats,
        )

    async def _send_stream(
        self,
        request: web.Request,
        head: bytes,
        tokens: list[bytes],
        tail: bytes,
        behaviour: Behaviour,
        stats: ModelStats,
    ) -> web.StreamResponse:
        """``head``, one frame per completion token (with the model's delays, stalls and
        resets), then ``tail``: the stream of either API."""
        stats.streams_started += 1
        interval = behaviour.token_interval_ms / 1000
        try:
            if behaviour.first_byte_ms:
                await asyncio.sleep(behaviour.first_byte_ms / 1000)
            response = web.StreamResponse(headers=SSE_HEADERS)
            await response.prepare(request)
            await response.write(head)
            # The trailing None lets a stall or reset land after the last token, before the end.
            for sent, frame in enumerate((*tokens, None)):
                if sent == behaviour.stall_after_tokens and not await self._stall():
                    _abort(request)  # shutting down: end the stall as a broken stream
                    return response
                if sent == behaviour.reset_after_tokens:
                    stats.streams_reset += 1
                    _abort(request)
                    return response
                if frame is None:
                    break
                if interval:
                    await asyncio.sleep(interval)
                await response.write(frame)
                stats.completion_tokens += 1
            await response.write(tail)
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            stats.streams_cancelled += 1
            raise
        stats.streams_completed += 1
        return response

    async def _raw(self, request: web.Request, raw: bytes, *, stream: bool) -> web.StreamResponse:
        if not stream:
            return web.Response(body=raw, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b"data: " + raw + b"\n\n")
        await response.write(protocol.DONE_FRAME)
        await response.write_eof()
        return response

    # -- Responses -------------------------------------------------------------------------

    def _new_id(self, prefix: str) -> str:
        self._sequence += 1
        return f"{prefix}_{self._token}{self._sequence:012d}"

    def _stored(self, response_id: str) -> Stored:
        stored = self.stored.get(response_id)
        if stored is None:
            raise responses.not_found(response_id)
        return stored

    def _store(self, draft: Draft, context: tuple[dict[str, object], ...]) -> None:
        if not draft.request.store:
            return
        inputs = (*context, *draft.request.input_items)
        self.stored[draft.id] = Stored(draft.response(), inputs, (draft.output_item(),))
        while len(self.stored) > responses.MAX_STORED:
            self.stored.popitem(last=False)

    async def create_response(self, request: web.Request) -> web.StreamResponse:
        body = await self._admit(request)
        if not isinstance(body, dict):
            raise ApiError("request body must be a JSON object", None)
        model = protocol.model_of(body)
        context: tuple[dict[str, object], ...] = ()
        previous = body.get("previous_response_id")
        if previous is not None:
            found = self.stored.get(previous) if isinstance(previous, str) else None
            if found is None:
                raise responses.previous_not_found(str(previous))
            context = found.context
        parsed = responses.parse(body, context, self._new_id, model=model)
        behaviour, stats = self._begin(model)
        chat = parsed.chat
        reply = compose_reply(
            chat, length=behaviour.length_for(chat.user_text), tool_calls_on=behaviour.tool_calls
        )
        stats.prompt_tokens += chat.prompt_tokens
        if behaviour.raw_body:
            return await self._raw(request, behaviour.raw_body.encode(), stream=chat.stream)
        prefix = "msg" if reply.message.get("tool_calls") is None else "fc"
        draft = responses.new_draft(self._new_id("resp"), self._new_id(prefix), parsed, reply)
        stats.in_flight += 1
        try:
            if chat.stream:
                return await self._stream_response(request, draft, context, behaviour, stats)
            if behaviour.latency_ms:
                await asyncio.sleep(behaviour.latency_ms / 1000)
            stats.completion_tokens += reply.completion_tokens
            self._store(draft, context)
            return json_response(draft.response(with_usage=not behaviour.omit_usage))
        finally:
            stats.in_flight -= 1

    async def _stream_response(
        self,
        request: web.Request,
        draft: Draft,
        context: tuple[dict[str, object], ...],
        behaviour: Behaviour,
        stats: ModelStats,
    ) -> web.StreamResponse:
        stats.streams_started += 1
        events = Events(draft)
        interval = behaviour.token_interval_ms / 1000
        try:
            if behaviour.first_byte_ms:
                await asyncio.sleep(behaviour.first_byte_ms / 1000)
            response = web.StreamResponse(headers=SSE_HEADERS)
            await response.prepare(request)
            await response.write(b"".join(events.head()))
            for sent, piece in enumerate((*draft.reply.deltas, None)):
                if sent == behaviour.stall_after_tokens and not await self._stall():
                    _abort(request)
                    return response
                if sent == behaviour.reset_after_tokens:
                    stats.streams_reset += 1
                    _abort(request)
                    return response
                if piece is None:
                    break
                if interval:
                    await asyncio.sleep(interval)
                frame = events.delta(piece)
                if frame is not None:
                    await response.write(frame)
                stats.completion_tokens += 1
            self._store(draft, context)
            await response.write(b"".join(events.tail(with_usage=not behaviour.omit_usage)))
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            stats.streams_cancelled += 1
            raise
        stats.streams_completed += 1
        return response

    async def get_response(self, request: web.Request) -> web.StreamResponse:
        await self._admit(request)
        return json_response(self._stored(request.match_info["id"]).response)

    async def delete_response(self, request: web.Request) -> web.StreamResponse:
        await self._admit(request)
        response_id = request.match_info["id"]
        self._stored(response_id)
        del self.stored[response_id]
        return json_response({"id": response_id, "object": "response", "deleted": True})

    async def cancel_response(self, request: web.Request) -> web.StreamResponse:
        await self._admit(request)
        self._stored(request.match_info["id"])
        raise ApiError("Only responses created with background=true can be cancelled.", None)

    async def input_items(self, request: web.Request) -> web.StreamResponse:
        await self._admit(request)
        stored = self._stored(request.match_info["id"])
        return json_response(responses.items_page(stored.inputs, request.query))

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        parsed = protocol.parse_embeddings(await self._admit(request))
        behaviour, stats = self._begin(parsed.model)
        stats.prompt_tokens += parsed.prompt_tokens
        if behaviour.latency_ms:
            await asyncio.sleep(behaviour.latency_ms / 1000)
        vectors = [embedding(parsed.model, text, parsed.dimensions) for text in parsed.inputs]
        return json_response(
            protocol.embeddings_body(parsed, vectors, with_usage=not behaviour.omit_usage)
        )

    async def messages(self, request: web.Request) -> web.StreamResponse:
        parsed = anthropic.parse(await self._admit(request, anthropic_api=True))
        chat = parsed.chat
        behaviour, stats = self._begin(chat.model, anthropic_api=True)
        message = anthropic.compose(
            parsed, length=behaviour.length_for(chat.user_text), tool_calls_on=behaviour.tool_calls
        )
        stats.prompt_tokens += chat.prompt_tokens
        if behaviour.raw_body:
            return await self._raw(request, behaviour.raw_body.encode(), stream=chat.stream)
        with_usage = not behaviour.omit_usage
        stats.in_flight += 1
        try:
            if chat.stream:
                frames = anthropic.stream_frames(
                    self._next_id("msg"), parsed, message, with_usage=with_usage
                )
                return await self._send_stream(
                    request, frames.head, list(frames.tokens), frames.tail, behaviour, stats
                )
            if behaviour.latency_ms:
                await asyncio.sleep(behaviour.latency_ms / 1000)
            stats.completion_tokens += message.output_tokens
            body = anthropic.message_body(
                self._next_id("msg"), parsed, message, with_usage=with_usage
            )
            return json_response(body)
        finally:
            stats.in_flight -= 1

    async def count_tokens(self, request: web.Request) -> web.StreamResponse:
        parsed = anthropic.parse(await self._admit(request, anthropic_api=True), needs_cap=False)
        self._begin(parsed.chat.model, anthropic_api=True)
        return json_response(anthropic.count_body(parsed))

    async def list_models(self, request: web.Request) -> web.StreamResponse:
        await self._admit(request)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": OWNER} for m in self.models]
        return json_response({"object": "list", "data": data})


@dataclass(frozen=True, slots=True)
class Stored:
    """A stored response: its object, its whole input context and its output items."""

    response: dict[str, object]
    inputs: tuple[dict[str, object], ...]
    output: tuple[dict[str, object], ...]

    @property
    def context(self) -> tuple[dict[str, object], ...]:
        """What a response continuing this one starts from."""
        return (*self.inputs, *self.output)


def _recorded_headers(request: web.Request) -> dict[str, str]:
    return {
        name.lower(): value
        for name, value in request.headers.items()
        if name.lower() in RECORDED_HEADERS or name.lower().startswith(RECORDED_HEADER_PREFIX)
    }


def _abort(request: web.Request) -> None:
    """Drop the TCP connection without ending the chunked body: the client sees a broken stream."""
    transport = request.transport
    if transport is not None:
        transport.abort()


async def start(fake: FakeLLM, *, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Serve ``fake`` on host:port (0 picks a free port); returns the runner and the bound port."""
    runner = web.AppRunner(
        fake.build_app(),
        handler_cancellation=True,  # a client hang-up cancels its handler: stats and stalls
        access_log=None,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host=host, port=port).start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0][1] if runner.addresses else port
    return runner, int(bound)
