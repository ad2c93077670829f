"""The sidecar's HTTP surface: every dialect's endpoints behind the one filter chain, the model
list, the on-call, OFREP, tools and feedback endpoints, and the error middleware.

Apart from the process wiring (``sidecar.app``) so that tests serve it over a config fed by hand:
both build it from the same ``Parts``, and the filter chain is assembled here only, in the order
``sidecar.pipeline.chain.ORDER`` gives.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
from aiohttp import web

from holdfast import dialects
from holdfast.logs import (
    REQUEST_ID_HEADER,
    bind_request_id,
    clear_request_id,
    get_logger,
    request_id_from,
)
from sidecar.budgets import BudgetFilter
from sidecar.config import ConfigState, PriceTable
from sidecar.contracts import ContractBook, ContractFilter, ToolBackend, ToolProxy, contract_status
from sidecar.errors import MethodNotAllowed, NotFound, SidecarError, spec_for
from sidecar.experiments import ExperimentBook, FeedbackApi
from sidecar.flags import FlagEvaluator, OfrepApi
from sidecar.http.guard import guard_middlewares
from sidecar.http.models import Models
from sidecar.ops import ControlPlane, Ops, SidecarMetrics
from sidecar.pins import Pinning
from sidecar.pipeline import DIALECT_KEY, REQUEST_ID_KEY, Exchange, ExchangeFilter, Proxy, assemble
from sidecar.prompts import PromptFilter
from sidecar.settings import SidecarSettings
from sidecar.shadow import ShadowFilter, ShadowRunner
from sidecar.signals import SignalBook, SignalsFilter, summary
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


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request ids, and every failure turned into the error shape of the request's dialect."""
    request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER, ""))
    request[REQUEST_ID_KEY] = request_id
    bind_request_id(request_id)
    try:
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
        response = error_response(
            request, SidecarError("internal error in the sidecar; see its log")
        )
    finally:
        clear_request_id()
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


def filter_chain(
    parts: Parts, shadow: ShadowRunner, contracts: ContractBook
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
        ShadowFilter(shadow, config),
    ]
    if parts.budget is not None:
        filters.append(parts.budget)
    return assemble(filters)


def build_http_app(parts: Parts) -> web.Application:
    settings, config, metrics = parts.settings, parts.config, parts.metrics
    app = web.Application(
        middlewares=[error_middleware, *guard_middlewares(settings)],  # type: ignore[list-item]
        client_max_size=settings.max_body_bytes,
    )
    shadow = parts.shadow
    if shadow is None:
        # Served alone (tests): the app owns its runner and cancels its calls on cleanup.
        owned = shadow = new_shadow_runner(settings, parts.upstream, metrics)
        app.on_cleanup.append(lambda _app: owned.close())
    app[SHADOW_KEY] = shadow
    contracts = ContractBook()
    prepare: list[Callable[[Exchange], Awaitable[None]]] = []
    if parts.budget is not None:
        prepare.append(parts.budget.await_first_slices)
    proxy = Proxy(
        settings,
        config,
        parts.upstream,
        metrics,
        parts.pinning,
        filters=filter_chain(parts, shadow, contracts),
        prepare=prepare,
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
    )
    app.cleanup_ctx.append(tool_proxy.lifecycle)
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
        contracts=lambda: contract_status(
            config, contracts, metrics.contracts, tool_proxy.breakers, tool_proxy.clock
        ),
    )
    flags = FlagEvaluator(config, lambda: ops.staleness().stale, metrics.flags)
    app.add_routes(
        [
            *proxy.routes(),
            *Models(config, settings.agent).routes(),
            *ops.routes(),
            *OfrepApi(flags).routes(),
            *tool_proxy.routes(),
            *FeedbackApi(config, parts.pinning.table, parts.experiments).routes(),
        ]
    )
    return app


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
