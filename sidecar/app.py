"""Wiring of one sidecar: config from etcd (or the saved snapshot), the HTTP app, its lifecycle."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Mapping

from aiohttp import web

from holdfast.dialects import estimate
from holdfast.keyspace import Keyspace
from holdfast.logs import (
    get_logger,
)
from holdfast.store.factory import open_store
from holdfast.store.mirror import MirrorUpdate, RangeMirror
from sidecar.budgets import (
    AdmissionQueue,
    BudgetFilter,
    BudgetKeeper,
    BudgetMetrics,
    BudgetOptions,
    Ledger,
    ToolCallBudget,
    estimator,
)
from sidecar.config import (
    CONFIG_KINDS,
    ConfigSnapshot,
    ConfigState,
    load_prices,
    persist,
    sidecar_ranges,
)
from sidecar.experiments import ExperimentBook, OutcomePublisher
from sidecar.http import Parts, build_http_app, new_shadow_runner
from sidecar.mcp import DriftLog
from sidecar.ops import (
    BeatSender,
    ControlPlane,
    HealthPublisher,
    HealthSources,
    Replicas,
    SidecarMetrics,
    WatchFeed,
)
from sidecar.pins import (
    PinClaims,
    Pinning,
    PinTable,
    PinWriter,
    StateLookup,
    StateSaver,
    StateTable,
    StateWriter,
    state_persist,
    states_path,
)
from sidecar.pins import persist as pin_persist
from sidecar.settings import SidecarSettings
from sidecar.signals import SignalBook
from sidecar.tracing import open_tracer
from sidecar.upstream import Upstream

log = get_logger(__name__)

# A continuation whose id this sidecar has not seen asks etcd; with first-turn claims off
# (--pin-create-timeout 0) it still may, for this long, since the answer cannot be guessed.
STATE_LOOKUP_MIN_TIMEOUT = 0.25


class Sidecar:
    """Owns every long-lived piece of one sidecar process and shuts them down in order."""

    def __init__(self, settings: SidecarSettings, environ: Mapping[str, str]) -> None:
        self.settings = settings
        self.keyspace = Keyspace(settings.env)
        self.config = ConfigState(self.keyspace, settings.agent, kinds=CONFIG_KINDS)
        self.metrics = SidecarMetrics(settings.agent)
        self.upstream = Upstream(settings, environ)
        self.store = open_store(settings.etcd_endpoints, security=settings.etcd_security)
        self.pins = PinTable(self.keyspace, settings.agent)
        self.replicas = Replicas(self.keyspace, settings.agent)
        self.states = StateTable(self.keyspace, settings.agent)
        # Exact ranges, each a watch id on the store's one stream: nothing another agent or
        # another sidecar writes for itself reaches this sidecar.
        self.mirror = RangeMirror(
            self.store, sidecar_ranges(self.keyspace, settings.agent, CONFIG_KINDS)
        )
        self.feed = WatchFeed(self.config, self.pins, self.states, self.replicas)
        self.pin_writer = PinWriter(
            self.store,
            self.pins,
            self.keyspace,
            self.metrics.pins,
            ttl=settings.pin_ttl,
            max_pending=settings.max_pending_pins,
        )
        self.pin_claims = PinClaims(
            self.store,
            self.keyspace,
            self.pin_writer,
            self.metrics.pins,
            timeout=settings.pin_create_timeout,
        )
        self.pinning = Pinning(
            settings.agent,
            self.pins,
            self.metrics.pins,
            ttl=settings.pin_ttl,
            claims=self.pin_claims if settings.pin_create_timeout > 0 else None,
        )
        self.metrics.pins.bind(lambda: len(self.pins), lambda: self.pin_writer.pending)
        self.pin_saver = pin_persist.PinSaver(
            pin_persist.pins_path(settings.state_dir, settings.env, settings.agent), self.pins
        )
        self.state_writer = StateWriter(
            self.store,
            self.states,
            self.keyspace,
            self.pin_writer,
            max_pending=settings.max_pending_pins,
        )
        self.state_lookup = StateLookup(
            self.store,
            self.states,
            self.keyspace,
            settings.agent,
            timeout=max(settings.pin_create_timeout, STATE_LOOKUP_MIN_TIMEOUT),
        )
        self.state_saver = StateSaver(
            states_path(settings.state_dir, settings.env, settings.agent), self.states
        )
        self.shadow = new_shadow_runner(settings, self.upstream, self.metrics)
        self.signals = SignalBook()
        self.traffic: Counter[str] = Counter()  # per dialect (x feature) of requests served
        self.prices = load_prices(settings.prices_file).with_fleet(self.config)
        self.experiments = ExperimentBook()
        self.mcp_drift = DriftLog()
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
                traffic=lambda: dict(self.traffic),
                mcp_drift=self.mcp_drift.records,
            ),
            replicas=self.replicas,
            sender=BeatSender(
                settings.sidecar_token, timeout=max(1.0, min(settings.health_interval, 5.0))
            ),
        )
        self.budget_ledger = Ledger(agent=settings.agent)
        self.budget_metrics = BudgetMetrics(
            self.metrics.registry, settings.agent, self.budget_ledger
        )
        self.budget_queue = AdmissionQueue(
            self.budget_ledger,
            max_waiting=settings.budget_queue_max,
            max_bytes=settings.budget_queue_max_bytes,
            # a slice short here can grow only while this sidecar hears from the controller
            slices_live=lambda: self.budgets.mirror.connected,
        )
        self.budgets = BudgetKeeper(
            self.store,
            self.keyspace,
            self.budget_ledger,
            self.config,
            sidecar_id=settings.effective_sidecar_id,
            interval=settings.budget_report_interval,
            idle_after=settings.budget_idle_after,
            queue=self.budget_queue,
        )
        self.budget_queue.on_join = self.budgets.wake
        self.tracer = open_tracer(settings, environ)  # None: tracing off
        self.snapshot_path = persist.snapshot_path(settings.state_dir, settings.env, settings.agent)
        self.writer = persist.SnapshotWriter(self.snapshot_path)
        self._rejections_seen = 0

    @property
    def control(self) -> ControlPlane:
        return self.mirror

    async def start(self) -> None:
        self.metrics.loop_lag.start()
        if self.settings.budget_estimator == "tokens":
            # before anything runs: loading holds the interpreter for about a second
            loaded = estimate.preload()
            log.info("budget_tokenizers_loaded", encodings=loaded)
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
        saved_states = state_persist.load(self.state_saver.path)
        self.states.load(saved_states)
        if saved_states:
            log.info("states_loaded", records=len(saved_states), pending=self.state_writer.pending)
        self.mirror.subscribe(self._on_update)
        await self.upstream.start()
        await self.pin_writer.start()
        await self.state_writer.start()
        await self.pin_saver.start()
        await self.state_saver.start()
        await self.mirror.start()  # returns at once; etcd may be down and that is fine
        await self.health.start()  # also returns at once
        await self.outcomes.start()
        await self.budgets.start()  # likewise: slices and spend reports follow etcd when it is up

    def _on_update(self, update: MirrorUpdate) -> None:
        self.feed(update)
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
        # The last words to etcd are independent and each bounded: said side by side, an etcd
        # outage delays the exit by one bound, not by one per component.
        results = await asyncio.gather(
            self.health.close(),
            self.outcomes.close(),
            self.budgets.close(),
            self.pin_writer.close(),
            self.state_writer.close(),
            return_exceptions=True,
        )
        await self.mirror.close()
        await self.pin_saver.close()
        await self.state_saver.close()
        await self.writer.close()
        await self.upstream.close()
        await self.store.close()
        await self.metrics.loop_lag.close()
        if self.tracer is not None:
            await self._close_tracer()
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _close_tracer(self) -> None:
        assert self.tracer is not None
        try:
            await self.tracer.close()  # the spans still buffered, bounded in time
        except Exception as exc:  # the collector's trouble must not fail the exit
            log.warning("trace_export_flush_failed", error=f"{type(exc).__name__}: {exc}")

    def build_app(self) -> web.Application:
        return build_http_app(
            Parts(
                settings=self.settings,
                config=self.config,
                upstream=self.upstream,
                metrics=self.metrics,
                control=self.control,
                etcd_endpoint=lambda: self.store.endpoint,
                pinning=self.pinning,
                pins_status=lambda: (
                    self.pin_writer.status()
                    | self.pin_claims.status()
                    | {"states": self.state_writer.status()}
                ),
                shadow=self.shadow,
                signals=self.signals,
                prices=self.prices,
                experiments=self.experiments,
                budget=self.budget_filter(),
                budget_status=self.budgets.status,
                health_status=self.health.status,
                etcd_traffic=self.store.traffic.to_json,
                states=self.states,
                state_lookup=self.state_lookup,
                traffic=self.traffic,
                mcp_drift=self.mcp_drift,
                tool_calls=ToolCallBudget(self.config, agent=self.settings.agent),
                tracer=self.tracer,
            )
        )

    def budget_filter(self) -> BudgetFilter:
        options = BudgetOptions(
            agent=self.settings.agent,
            default_cap=self.settings.budget_max_tokens,
            estimator=estimator(self.settings.budget_estimator),
            first_slice_wait=self.settings.budget_first_slice_wait,
        )
        return BudgetFilter(
            self.budget_ledger,
            self.config,
            options,
            self.budget_metrics,
            prices=self.prices,
            first_slice=self.budgets.wait_for_slices,
            queue=self.budget_queue,
            slices_live=self.budget_queue.slices_live,
        )
