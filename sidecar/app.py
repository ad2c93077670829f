"""Wiring of one sidecar: config from etcd (or the saved snapshot), the HTTP app, its lifecycle."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Final

from aiohttp import web

from holdfast.errorshape import error_body
from holdfast.keyspace import Keyspace
from holdfast.logs import (
    REQUEST_ID_HEADER,
    bind_request_id,
    clear_request_id,
    get_logger,
    request_id_from,
)
from holdfast.store.etcd import EtcdStore
from holdfast.store.mirror import MirrorUpdate, PrefixMirror
from sidecar import persist, pin_persist
from sidecar.budget_filter import BudgetFilter, BudgetOptions
from sidecar.budget_keeper import BudgetKeeper
from sidecar.budget_ledger import Ledger
from sidecar.budget_metrics import BudgetMetrics
from sidecar.config import ConfigSnapshot, ConfigState, wanted_key
from sidecar.contract_book import ContractBook
from sidecar.contract_filter import ContractFilter
from sidecar.contract_status import contract_status
from sidecar.errors import MethodNotAllowed, NotFound, SidecarError, spec_for
from sidecar.exchange import ExchangeFilter
from sidecar.feedback import ExperimentBook, FeedbackApi
from sidecar.flags import FlagEvaluator
from sidecar.guard import guard_middlewares
from sidecar.health import HealthPublisher, HealthSources
from sidecar.kinds import CONFIG_KINDS
from sidecar.metrics import SidecarMetrics
from sidecar.ofrep import OfrepApi
from sidecar.openai_api import REQUEST_ID_KEY, OpenAIProxy
from sidecar.ops import ControlPlane, Ops
from sidecar.outcome_publisher import OutcomePublisher
from sidecar.pin_writer import PinWriter
from sidecar.pinning import Pinning
from sidecar.pins import PinTable
from sidecar.prices import PriceTable, load_prices
from sidecar.prompt_filter import PromptFilter
from sidecar.settings import SidecarSettings
from sidecar.shadow import ShadowRunner
from sidecar.shadow_filter import ShadowFilter
from sidecar.signal_book import SignalBook, summary
from sidecar.signals_filter import SignalsFilter
from sidecar.tool_backend import ToolBackend
from sidecar.tool_proxy import ToolProxy
from sidecar.upstream import Upstream

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


class Sidecar:
    """Owns every long-lived piece of one sidecar process and shuts them down in order."""

    def __init__(self, settings: SidecarSettings, environ: Mapping[str, str]) -> None:
        self.settings = settings
        self.keyspace = Keyspace(settings.env)
        self.config = ConfigState(self.keyspace, settings.agent, kinds=CONFIG_KINDS)
        self.metrics = SidecarMetrics(settings.agent)
        self.upstream = Upstream(settings, environ)
        self.store = EtcdStore(settings.etcd_endpoints, security=settings.etcd_security)
        self.pins = PinTable(self.keyspace, settings.agent)
        config_key = wanted_key(self.keyspace, settings.agent, CONFIG_KINDS)
        self.mirror = PrefixMirror(
            self.store,
            self.keyspace.prefix,
            key_filter=lambda key: config_key(key) or self.pins.accepts(key),
        )
        self.pin_writer = PinWriter(
            self.store,
            self.pins,
            self.keyspace,
            self.metrics.pins,
            ttl=settings.pin_ttl,
            max_pending=settings.max_pending_pins,
        )
        self.pinning = Pinning(settings.agent, self.pins, self.metrics.pins, ttl=settings.pin_ttl)
        self.metrics.pins.bind(lambda: len(self.pins), lambda: self.pin_writer.pending)
        self.pin_saver = pin_persist.PinSaver(
            pin_persist.pins_path(settings.state_dir, settings.env, settings.agent), self.pins
        )
        self.shadow = new_shadow_runner(settings, self.upstream, self.metrics)
        self.signals = SignalBook()
        self.prices = load_prices(settings.prices_file).with_fleet(self.config)
        self.experiments = ExperimentBook()
        self.outcomes = OutcomePublisher(
            self.store,
            self.keyspace,
            self.experiments,
            sidecar_id=settings.effective_sidecar_id,
            interval=settings.health_interval,
        )
        self.health = HealthPublisher(
            self.store,
            self.keyspace,
            sidecar_id=settings.effective_sidecar_id,
            agent=settings.agent,
            interval=settings.health_interval,
            sources=HealthSources(
                config_revision=lambda: self.config.current.revision if self.config.current else 0,
                pins=lambda: (len(self.pins), self.pin_writer.pending),
                shadow=self.shadow.stats,
                signals=self.signals.signals,
                sessions=self.signals.spreads,
                tools=self.metrics.contracts.tool_signals,
            ),
        )
        self.budget_ledger = Ledger()
        self.budget_metrics = BudgetMetrics(
            self.metrics.registry, settings.agent, self.budget_ledger
        )
        self.budgets = BudgetKeeper(
            self.store,
            self.keyspace,
            self.budget_ledger,
            self.config,
            sidecar_id=settings.effective_sidecar_id,
            interval=settings.budget_report_interval,
            idle_after=settings.budget_idle_after,
        )
        self.snapshot_path = persist.snapshot_path(settings.state_dir, settings.env, settings.agent)
        self.writer = persist.SnapshotWriter(self.snapshot_path)
        self._rejections_seen = 0

    @property
    def control(self) -> ControlPlane:
        return self.mirror

    async def start(self) -> None:
        saved = persist.load(self.snapshot_path)
        if saved is not None:
            self.config.apply_reset(saved.revision, saved.kvs, "snapshot")
            log.info(
                "snapshot_loaded",
                revision=saved.revision,
                age_seconds=round(time.time() - saved.saved_at, 1),
            )
        self.config.on_change(self._persist)
        self.config.on_change(self._mark_route)
        saved_pins = pin_persist.load(self.pin_saver.path)
        self.pins.load(saved_pins)
        if saved_pins:
            log.info("pins_loaded", pins=len(saved_pins), pending=self.pin_writer.pending)
        self.mirror.subscribe(self._on_update)
        await self.upstream.start()
        await self.pin_writer.start()
        await self.pin_saver.start()
        await self.mirror.start()  # returns at once; etcd may be down and that is fine
        await self.health.start()  # also returns at once
        await self.outcomes.start()
        await self.budgets.start()  # likewise: slices and spend reports follow etcd when it is up

    def _on_update(self, update: MirrorUpdate) -> None:
        # Pins go to the pin table only: they are not configuration and must not be saved in
        # (or trigger saves of) the config snapshot.
        if update.reset:
            self.pins.apply_reset(update.kvs)
            self.config.apply_reset(update.revision, update.kvs, "etcd")
        else:
            pins = [c for c in update.changes if self.pins.accepts(c.key)]
            if pins:
                self.pins.apply_changes(pins)
            if len(pins) != len(update.changes):
                rest = [c for c in update.changes if not self.pins.accepts(c.key)]
                self.config.apply_changes(update.revision, rest)
        new = len(self.config.rejections)
        if new != self._rejections_seen:
            self.metrics.records_rejected.inc(max(0, new - self._rejections_seen))
            self._rejections_seen = new

    def _mark_route(self, snapshot: ConfigSnapshot) -> None:
        models = {name: r.model for name, r in snapshot.releases.items()}
        self.metrics.signals.mark_route(snapshot.route, models, time.time())

    def _persist(self, snapshot: ConfigSnapshot) -> None:
        if snapshot.source == "etcd":
            self.writer.submit(snapshot.revision, snapshot.raw)

    async def close(self) -> None:
        await self.shadow.close()  # before the publisher, so its last snapshot has them all
        await self.health.close()
        await self.outcomes.close()
        await self.budgets.close()
        await self.mirror.close()
        await self.pin_writer.close()
        await self.pin_saver.close()
        await self.writer.close()
        await self.upstream.close()
        await self.store.close()

    def build_app(self) -> web.Application:
        return build_http_app(
            self.settings,
            self.config,
            self.upstream,
            self.metrics,
            self.control,
            lambda: self.store.endpoint,
            self.pinning,
            self.pin_writer.status,
            shadow=self.shadow,
            signals=self.signals,
            prices=self.prices,
            filters=[self.budget_filter()],
            budget_status=self.budgets.status,
            experiments=self.experiments,
        )

    def budget_filter(self) -> BudgetFilter:
        options = BudgetOptions(
            agent=self.settings.agent,
            default_cap=self.settings.budget_max_tokens,
            estimator="chars" if self.settings.budget_estimator == "chars" else "bytes",
        )
        return BudgetFilter(
            self.budget_ledger, self.config, options, self.budget_metrics, prices=self.prices
        )


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
    routes: Sequence[web.RouteDef] = (),
    budget_status: Callable[[], dict[str, Any]] | None = None,
    experiments: ExperimentBook | None = None,
) -> web.Application:
    """The HTTP surface alone, so tests can serve it over a config fed by hand.

    ``filters`` ride on every proxied exchange after the shadow filter (see sidecar.exchange);
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
    signals_filter = SignalsFilter(book, metrics.signals, prices)
    tools = ContractBook()
    contract_filter = ContractFilter(config, tools, metrics.contracts)
    chain: tuple[ExchangeFilter, ...] = (
        signals_filter,
        PromptFilter(config, pinning.table),  # before the others: they see the final body
        contract_filter,
        ShadowFilter(shadow, config),
        *filters,
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
    proxy = OpenAIProxy(settings, config, upstream, metrics, pinning, filters=chain)
    ops = Ops(
        settings,
        config,
        control,
        metrics,
        etcd_endpoint,
        pins_status,
        signals=lambda: {"releases": summary(book.signals()), "sessions_tracked": book.sessions},
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
    )
