"""The sidecar's HTTP surface: the OpenAI proxy with its filter chain, the on-call, OFREP,
tools and feedback endpoints, and the error middleware that gives every failure OpenAI's shape.

Apart from the process wiring (``sidecar.app``) so that tests serve it over a config fed by hand.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from aiohttp import web

from holdfast.errorshape import error_body
from holdfast.logs import (
    REQUEST_ID_HEADER,
    bind_request_id,
    clear_request_id,
    get_logger,
    request_id_from,
)
from sidecar.budgets.prices import PriceTable
from sidecar.config.state import ConfigState
from sidecar.contracts.backend import ToolBackend
from sidecar.contracts.book import ContractBook
from sidecar.contracts.filter import ContractFilter
from sidecar.contracts.status import contract_status
from sidecar.contracts.tool_proxy import ToolProxy
from sidecar.errors import MethodNotAllowed, NotFound, SidecarError, spec_for
from sidecar.experiments.feedback import ExperimentBook, FeedbackApi
from sidecar.flags.evaluator import FlagEvaluator
from sidecar.flags.ofrep import OfrepApi
from sidecar.http.guard import guard_middlewares
from sidecar.ops.endpoints import ControlPlane, Ops
from sidecar.ops.metrics import SidecarMetrics
from sidecar.pins.pinning import Pinning
from sidecar.pipeline.exchange import Exchange, ExchangeFilter
from sidecar.pipeline.proxy import REQUEST_ID_KEY, OpenAIProxy
from sidecar.prompts.filter import PromptFilter
from sidecar.settings.model import SidecarSettings
from sidecar.shadow.filter import ShadowFilter
from sidecar.shadow.runner import ShadowRunner
from sidecar.signals.book import SignalBook, summary
from sidecar.signals.filter import SignalsFilter
from sidecar.upstream.client import Upstream

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SHADOW_KEY: Final = web.AppKey("holdfast_shadow", ShadowRunner)


def _json_error(exc: SidecarError) -> web.Response:
    spec = spec_for(exc)
    return web.Response(
        status=spec.status,
        text=json.dumps(error_body(exc.message, spec, exc.param)),
        content_type="application/json",
        headers=exc.headers,
    )


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request ids, and every failure turned into the OpenAI error shape."""
    request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER, ""))
    request[REQUEST_ID_KEY] = request_id
    bind_request_id(request_id)
    try:
        response = await handler(request)
    except SidecarError as exc:
        spec = spec_for(exc)
        log.info("request_refused", path=request.path, code=spec.code, status=spec.status)
        response = _json_error(exc)
    except web.HTTPMethodNotAllowed as exc:
        response = _json_error(
            MethodNotAllowed(f"{request.method} is not allowed on {request.path}")
        )
        response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
    except web.HTTPNotFound:
        response = _json_error(NotFound(f"no endpoint {request.method} {request.path:.200}"))
    except (ConnectionResetError, asyncio.CancelledError):
        log.info("client_disconnected", path=request.path)
        raise
    except Exception:
        log.exception("request_failed", path=request.path)
        response = _json_error(SidecarError("internal error in the sidecar; see its log"))
    finally:
        clear_request_id()
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


def build_http_app(
    settings: SidecarSettings,
    config: ConfigState,
    upstream: Upstream,
    metrics: SidecarMetrics,
    control: ControlPlane,
    etcd_endpoint: Callable[[], str],
    pinning: Pinning,
    pins_status: Callable[[], dict[str, Any]] | None = None,
    *,
    shadow: ShadowRunner | None = None,
    signals: SignalBook | None = None,
    prices: PriceTable | None = None,
    filters: Sequence[ExchangeFilter] = (),
    prepare: Sequence[Callable[[Exchange], Awaitable[None]]] = (),
    routes: Sequence[web.RouteDef] = (),
    budget_status: Callable[[], dict[str, Any]] | None = None,
    experiments: ExperimentBook | None = None,
) -> web.Application:
    """The HTTP surface alone, so tests can serve it over a config fed by hand.

    ``filters`` ride on every proxied exchange before the shadow filter (see sidecar.exchange);
    ``routes`` are further endpoints beside the OpenAI and on-call ones.
    """
    app = web.Application(
        middlewares=[error_middleware, *guard_middlewares(settings)],  # type: ignore[list-item]
        client_max_size=settings.max_body_bytes,
    )
    if shadow is None:
        # Served alone (tests): the app owns its runner and cancels its calls on cleanup.
        owned = shadow = new_shadow_runner(settings, upstream, metrics)
        app.on_cleanup.append(lambda _app: owned.close())
    app[SHADOW_KEY] = shadow
    book = signals if signals is not None else SignalBook()
    # Signals first: it must see every exchange, including a later filter's refusal.
    signals_filter = SignalsFilter(
        book,
        metrics.signals,
        prices,
        route=lambda: config.current.route if config.current is not None else None,
    )
    tools = ContractBook()
    contract_filter = ContractFilter(config, tools, metrics.contracts)
    chain: tuple[ExchangeFilter, ...] = (
        signals_filter,
        PromptFilter(config, pinning.table),  # before the others: they see the final body
        contract_filter,
        *filters,
        # Last: only a request no filter refused is shadowed, with the body as it goes out.
        ShadowFilter(shadow, config),
    )
    tool_proxy = ToolProxy(
        settings.agent,
        config,
        pinning,
        tools,
        metrics.contracts,
        max_body_bytes=settings.max_body_bytes,
        max_json_depth=settings.limits.max_json_depth,
        backend=ToolBackend(policy=settings.limits.host_policy()),
    )
    app.cleanup_ctx.append(tool_proxy.lifecycle)
    proxy = OpenAIProxy(
        settings, config, upstream, metrics, pinning, filters=chain, prepare=prepare
    )
    ops = Ops(
        settings,
        config,
        control,
        metrics,
        etcd_endpoint,
        pins_status,
        signals=lambda: {
            "releases": summary(book.signals(), book.spreads()),
            "sessions_tracked": book.sessions,
        },
        budgets=budget_status,
        contracts=lambda: contract_status(
            config, tools, metrics.contracts, tool_proxy.breakers, tool_proxy.clock
        ),
    )
    flags = FlagEvaluator(config, lambda: ops.staleness().stale, metrics.flags)
    app.add_routes([*proxy.routes(), *ops.routes(), *OfrepApi(flags).routes(), *routes])
    app.add_routes(tool_proxy.routes())
    book_of_outcomes = experiments if experiments is not None else ExperimentBook()
    app.add_routes(FeedbackApi(config, pinning.table, book_of_outcomes).routes())
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
