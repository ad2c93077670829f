"""Wiring of one sidecar: config from etcd (or the saved snapshot), the HTTP app, its lifecycle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from aiohttp import web

from holdfast.keyspace import Keyspace
from holdfast.logs import (
    get_logger,
)
from holdfast.store.factory import open_store
from holdfast.store.mirror import MirrorUpdate, RangeMirror
from sidecar.budgets import BudgetFilter, BudgetKeeper, BudgetMetrics, BudgetOptions, Ledger
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
from sidecar.ops import (
    BeatSender,
    ControlPlane,
    HealthPublisher,
    HealthSources,
    Replicas,
    SidecarMetrics,
    WatchFeed,
)
from sidecar.pins import PinClaims, Pinning, PinTable, PinWriter
from sidecar.pins import persist as pin_persist
from sidecar.settings import SidecarSettings
from sidecar.signals import SignalBook
from sidecar.upstream import Upstream

log = get_logger(__name__)


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
        # Exact ranges, each a watch id on the store's one stream: nothing another agent or
        # another sidecar writes for itself reaches this sidecar.
        self.mirror = RangeMirror(
            self.store, sidecar_ranges(self.keyspace, settings.agent, CONFIG_KINDS)
        )
        self.feed = WatchFeed(self.config, self.pins, self.replicas)
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
            replicas=self.replicas,
            sender=BeatSender(
                settings.sidecar_token, timeout=max(1.0, min(settings.health_interval, 5.0))
            ),
        )
        self.budget_ledger = Ledger(agent=settings.agent)
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
            return_exceptions=True,
        )
        await self.mirror.close()
        await self.pin_saver.close()
        await self.writer.close()
        await self.upstream.close()
        await self.store.close()
        for result in results:
            if isinstance(result, BaseException):
                raise result

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
                pins_status=lambda: self.pin_writer.status() | self.pin_claims.status(),
                shadow=self.shadow,
                signals=self.signals,
                prices=self.prices,
                experiments=self.experiments,
                budget=self.budget_filter(),
                budget_status=self.budgets.status,
                health_status=self.health.status,
                etcd_traffic=self.store.traffic.to_json,
            )
        )

    def budget_filter(self) -> BudgetFilter:
        options = BudgetOptions(
            agent=self.settings.agent,
            default_cap=self.settings.budget_max_tokens,
            estimator="chars" if self.settings.budget_estimator == "chars" else "bytes",
            first_slice_wait=self.settings.budget_first_slice_wait,
        )
        return BudgetFilter(
            self.budget_ledger,
            self.config,
            options,
            self.budget_metrics,
            prices=self.prices,
            first_slice=self.budgets.wait_for_slices,
        )
