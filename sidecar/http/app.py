"""The sidecar's HTTP surface: every dialect's endpoints behind the one filter chain, the model
list, the on-call, OFREP, tools and feedback endpoints, and the error middleware.

Apart from the process wiring (``sidecar.app``) so that tests serve it over a config fed by hand:
both build it from the same ``Parts``, and the filter chain is assembled here only, in the order
``sidecar.pipeline.chain.ORDER`` gives.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiohttp import web

from holdfast import dialects
from holdfast.keyspace import Keyspace
from holdfast.logs import (
    REQUEST_ID_HEADER,
    bind_request_id,
    clear_request_id,
    get_logger,
    request_id_from,
)
from holdfast.mcp.client import McpClient
from sidecar.budgets import BudgetFilter, ToolCallBudget
from sidecar.config import ConfigState, PriceTable
from sidecar.contracts import (
    ContractBook,
    ContractFilter,
    ToolBackend,
    ToolBreakers,
    ToolProxy,
    contract_status,
)
from sidecar.errors import MethodNotAllowed, NotFound, SidecarError, spec_for
from sidecar.experiments import ExperimentBook, FeedbackApi
from sidecar.flags import FlagEvaluator, OfrepApi
from sidecar.http.guard import Guard
from sidecar.http.models import Models
from sidecar.mcp import Backends, DriftLog, McpMetrics, McpServer, Methods, ToolCalls
from sidecar.ops import ControlPlane, Ops, SidecarMetrics
from sidecar.pins import Pinning, StateLookup, StateTable
from sidecar.pipeline import DIALECT_KEY, REQUEST_ID_KEY, Exchange, ExchangeFilter, Proxy, assemble
from sidecar.prompts import PromptFilter
from sidecar.settings import SidecarSettings
from sidecar.shadow import ShadowFilter, ShadowRunner
from sidecar.signals import SignalBook, SignalsFilter, summary
from sidecar.state import StateEndpoints, StateFilter, StateRouting
from sidecar.tracing import ToolSpans, Tracer, TracingFilter
from sidecar.upstream import Upstream

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SHADOW_KEY: Final = web.AppKey("holdfast_shadow", ShadowRunner)
# Errors raised before a dialect's handler ran (the guard, a wrong method) still speak its shape.
PATH_DIALECTS: Final[dict[str, dialects.Dialect]] = {
    path: d for d in dialects.DIALECTS for path in d.paths
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Parts:
    """What the HTTP surface serves, built once by the process wiring or by a test."""

    settings: SidecarSettings
    config: ConfigState
    upstream: Upstream
    metrics: SidecarMetrics
    control: ControlPlane
    etcd_endpoint: Callable[[], str]
    pinning: Pinning
    pins_status: Callable[[], dict[str, Any]] | None = None
    shadow: ShadowRunner | None = None  # None: the app owns one (served alone, in tests)
    signals: SignalBook = field(default_factory=SignalBook)
    prices: PriceTable | None = None
    experiments: ExperimentBook = field(default_factory=ExperimentBook)
    budget: BudgetFilter | None = None  # None: no budgets on this surface
    budget_status: Callable[[], dict[str, Any]] | None = None
    health_status: Callable[[], dict[str, Any]] | None = None
    etcd_traffic: Callable[[], dict[str, Any]] | None = None
    # Which release issued each provider-held state id (OpenAI Responses); None: the app keeps
    # a table of its own, and a lookup that finds nothing in etcd (served alone, in tests).
    states: StateTable | None = None
    state_lookup: StateLookup | None = None
    # What the requests served use, per dialect and feature (the health snapshot's traffic).
    traffic: Counter[str] = field(default_factory=Counter)
    mcp_drift: DriftLog = field(default_factory=DriftLog)  # the health snapshot reads it too
    tool_calls: ToolCallBudget | None = None  # None: no tool-call limits on this surface
    tracer: Tracer | None = None  # None: tracing off, nothing of it on the request path


def _dialect_of(request: web.Request) -> dialects.Dialect:
    chosen: dialects.Dialect | None = request.get(DIALECT_KEY)
    return chosen or PATH_DIALECTS.get(request.path, dialects.DEFAULT)


def error_response(request: web.Request, exc: SidecarError) -> web.Response:
    spec = spec_for(exc)
    body = _dialect_of(request).error_body(exc.message, spec.kind, spec.code, exc.param)
    return web.Response(
        status=spec.status,
        body=orjson.dumps(body),
        content_type="application/json",
        headers=exc.headers,
    )


def middleware(guard: Guard) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """The one middleware (every layer is a coroutine frame on every request): request ids,
    the guard's checks, and every failure turned into the error shape of the request's
    dialect."""

    @web.middleware
    async def serve(request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER, ""))
        request[REQUEST_ID_KEY] = request_id
        bound = bind_request_id(request_id)
        counted = False
        try:
            counted = guard.admit(request)
            response = await handler(request)
        except SidecarError as exc:
            spec = spec_for(exc)
            log.info("request_refused", path=request.path, code=spec.code, status=spec.status)
            response = error_response(request, exc)
        except web.HTTPMethodNotAllowed as exc:
            response = error_response(
                request, MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
            )
            response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
        except web.HTTPNotFound:
            response = error_response(
                request, NotFound(f"no endpoint {request.method} {request.path:.200}")
            )
        except (ConnectionResetError, asyncio.CancelledError):
            log.info("client_disconnected", path=request.path)
            raise
        except Exception:
            log.exception("request_failed", path=request.path)
            failure = SidecarError("internal error in the sidecar; see its log")
            response = error_response(request, failure)
        finally:
            if counted:
                guard.release()
            clear_request_id(bound)
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = request_id
        return response

    return serve


def filter_chain(
    parts: Parts, shadow: ShadowRunner, contracts: ContractBook, states: StateTable
) -> tuple[ExchangeFilter, ...]:
    """Every filter of the proxied path, each from its concern's package, in chain order."""
    config = parts.config
    filters: list[ExchangeFilter] = [
        SignalsFilter(
            parts.signals,
            parts.metrics.signals,
            parts.prices,
            route=lambda: config.current.route if config.current is not None else None,
        ),
        PromptFilter(config, parts.pinning.table),
        ContractFilter(config, contracts, parts.metrics.contracts),
        StateFilter(parts.settings.agent, states),
        ShadowFilter(shadow, config),
    ]
    if parts.budget is not None:
        filters.append(parts.budget)
    if parts.tracer is not None:
        filters.append(TracingFilter(parts.tracer))
    return assemble(filters)


def build_http_app(parts: Parts) -> web.Application:
    settings, config, metrics = parts.settings, parts.config, parts.metrics
    app = web.Application(
        middlewares=[middleware(Guard(settings))],  # type: ignore[list-item]
        client_max_size=settings.max_body_bytes,
    )
    shadow = parts.shadow
    if shadow is None:
        # Served alone (tests): the app owns its runner and cancels its calls on cleanup.
        owned = shadow = new_shadow_runner(settings, parts.upstream, metrics)
        app.on_cleanup.append(lambda _app: owned.close())
    app[SHADOW_KEY] = shadow
    contracts = ContractBook()
    states, lookup = _states(parts)
    prepare: list[Callable[[Exchange], Awaitable[None]]] = []
    if parts.budget is not None:
        prepare.append(parts.budget.await_admission)
    proxy = Proxy(
        settings,
        config,
        parts.upstream,
        metrics,
        parts.pinning,
        filters=filter_chain(parts, shadow, contracts, states),
        prepare=prepare,
        state=StateRouting(settings.agent, config, parts.pinning, states, lookup, parts.upstream),
        traffic=parts.traffic,
    )
    state_endpoints = StateEndpoints(
        settings.agent,
        config,
        states,
        lookup,
        parts.upstream,
        max_body_bytes=settings.max_body_bytes,
    )
    tool_proxy = ToolProxy(
        settings.agent,
        config,
        parts.pinning,
        contracts,
        metrics.contracts,
        max_body_bytes=settings.max_body_bytes,
        max_json_depth=settings.limits.max_json_depth,
        backend=ToolBackend(policy=settings.limits.host_policy()),
        tracer=ToolSpans(parts.tracer, settings.agent) if parts.tracer is not None else None,
    )
    app.cleanup_ctx.append(tool_proxy.lifecycle)
    mcp = mcp_server(parts, contracts, tool_proxy.breakers)
    app.cleanup_ctx.append(mcp.lifecycle)
    book = parts.signals
    ops = Ops(
        settings,
        config,
        parts.control,
        metrics,
        parts.etcd_endpoint,
        parts.pins_status,
        signals=lambda: {
            "releases": summary(book.signals(), book.spreads()),
            "sessions_tracked": book.sessions,
        },
        budgets=parts.budget_status,
        health=parts.health_status,
        etcd_traffic=parts.etcd_traffic,
        contracts=lambda: (
            contract_status(
                config, contracts, metrics.contracts, tool_proxy.breakers, tool_proxy.clock
            )
            | {"mcp": mcp.status()}
        ),
    )
    flags = FlagEvaluator(config, lambda: ops.staleness().stale, metrics.flags)
    app.add_routes(
        [
            *proxy.routes(),
            *state_endpoints.routes(),
            *Models(config, settings.agent).routes(),
            *ops.routes(),
            *OfrepApi(flags).routes(),
            *tool_proxy.routes(),
            *mcp.routes(),
            *FeedbackApi(config, parts.pinning.table, parts.experiments).routes(),
        ]
    )
    return app


def mcp_server(parts: Parts, contracts: ContractBook, breakers: ToolBreakers) -> McpServer:
    """``/mcp/{toolset}``: shares the tool proxy's contract book and breakers (one circuit per
    backend and contract version, whichever surface the calls came through)."""
    settings, metrics = parts.settings, parts.metrics
    backends = Backends(McpClient(policy=settings.limits.host_policy()))
    methods = Methods(
        settings.agent, parts.config, parts.pinning, contracts, metrics.contracts,
        McpMetrics(metrics.registry, settings.agent), backends, ToolCalls(backends, breakers),
        parts.mcp_drift, parts.tool_calls,
    )  # fmt: skip
    server = McpServer(
        methods,
        methods.metrics,
        max_body_bytes=settings.max_body_bytes,
        max_json_depth=settings.limits.max_json_depth,
    )
    parts.pinning.table.on_adopt(server.pin_changed)
    parts.config.on_change(server.config_changed)
    return server


def _states(parts: Parts) -> tuple[StateTable, StateLookup]:
    """The state table and its lookup; served alone, a table of the app's own and no etcd (a
    continuation of an id this app did not record is then a 404)."""
    if parts.states is not None and parts.state_lookup is not None:
        return parts.states, parts.state_lookup
    keyspace = Keyspace(parts.settings.env)
    states = parts.states or StateTable(keyspace, parts.settings.agent)
    lookup = StateLookup(
        None,
        states,
        keyspace,
        parts.settings.agent,
        timeout=parts.settings.pin_create_timeout or 0.25,
    )
    return states, lookup


def new_shadow_runner(
    settings: SidecarSettings, upstream: Upstream, metrics: SidecarMetrics
) -> ShadowRunner:
    return ShadowRunner(
        settings.agent,
        upstream,
        metrics.shadow,
        max_concurrency=settings.shadow_max_concurrency,
        tokens_per_minute=settings.shadow_tokens_per_minute,
        default_cap=settings.budget_max_tokens,
    )
