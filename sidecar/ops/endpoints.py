"""On-call endpoints: /healthz, /readyz, /status (JSON for a person), /metrics (Prometheus)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from holdfast import __version__
from sidecar.config import ConfigState
from sidecar.ops.metrics import CONTENT_TYPE, SidecarMetrics
from sidecar.ops.process import ProcessReadings
from sidecar.settings import SidecarSettings


class ControlPlane(Protocol):
    """What ops needs to know about the etcd watch (satisfied by PrefixMirror)."""

    @property
    def connected(self) -> bool: ...
    @property
    def last_contact(self) -> float | None: ...
    @property
    def revision(self) -> int: ...
    @property
    def resyncs(self) -> int: ...
    @property
    def reconnects(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Staleness:
    stale: bool
    age: float | None  # seconds since etcd last confirmed the config; None: never


def staleness(
    *, connected: bool, last_contact: float | None, now: float, stale_after: float
) -> Staleness:
    if last_contact is None:
        return Staleness(stale=True, age=None)
    age = 0.0 if connected else max(0.0, now - last_contact)
    return Staleness(stale=age > stale_after, age=age)


class Ops:
    def __init__(
        self,
        settings: SidecarSettings,
        config: ConfigState,
        control: ControlPlane,
        metrics: SidecarMetrics,
        etcd_endpoint: Callable[[], str],
        pins: Callable[[], dict[str, Any]] | None = None,
        *,
        signals: Callable[[], dict[str, Any]] | None = None,
        budgets: Callable[[], dict[str, Any]] | None = None,
        contracts: Callable[[], dict[str, Any]] | None = None,
        health: Callable[[], dict[str, Any]] | None = None,
        etcd_traffic: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.settings = settings
        self._pins = pins
        self._health = health
        self._etcd_traffic = etcd_traffic
        self._signals = signals
        self._budgets = budgets
        self._contracts = contracts
        self.config = config
        self.control = control
        self.metrics = metrics
        self._endpoint = etcd_endpoint
        self._process = ProcessReadings()
        self._started = time.time()

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/healthz", self.healthz),
            web.get("/readyz", self.readyz),
            web.get("/status", self.status),
            web.get("/metrics", self.metrics_endpoint),
        ]

    def staleness(self) -> Staleness:
        return staleness(
            connected=self.control.connected,
            last_contact=self.control.last_contact,
            now=time.monotonic(),
            stale_after=self.settings.stale_after,
        )

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        snapshot = self.config.current
        if snapshot is None:
            return web.json_response(
                {"ready": False, "reason": "no configuration loaded yet"}, status=503
            )
        state = self.staleness()
        return web.json_response(
            {
                "ready": True,
                "stale": state.stale,
                "config_revision": snapshot.revision,
                "source": snapshot.source,
            }
        )

    def _refresh_gauges(self) -> Staleness:
        state = self.staleness()
        snapshot = self.config.current
        self.metrics.config_stale.set(1 if state.stale else 0)
        self.metrics.etcd_connected.set(1 if self.control.connected else 0)
        self.metrics.config_revision.set(snapshot.revision if snapshot else 0)
        return state

    async def status(self, request: web.Request) -> web.Response:
        state = self._refresh_gauges()
        snapshot = self.config.current
        route = snapshot.route if snapshot else None
        rss, cpu = self._process.rss_bytes(), self._process.cpu_percent()
        body = {
            "agent": self.settings.agent,
            "env": self.settings.env,
            "sidecar_id": self.settings.effective_sidecar_id,
            "version": __version__,
            "uptime_seconds": round(time.time() - self._started, 3),
            "config": {
                "revision": snapshot.revision if snapshot else None,
                "source": snapshot.source if snapshot else None,
                "applied_at": snapshot.applied_at if snapshot else None,
                "stale": state.stale,
                "staleness_seconds": None if state.age is None else round(state.age, 3),
                "rejected_records": [
                    {"key": r.key, "revision": r.revision, "reason": r.reason}
                    for r in self.config.rejections
                ],
            },
            "etcd": {
                "endpoint": self._endpoint(),
                "connected": self.control.connected,
                "watch_revision": self.control.revision,
                "reconnects": self.control.reconnects,
                "resyncs": self.control.resyncs,
                # What etcd sent this sidecar, per key directory: only what concerns it.
                "received": self._etcd_traffic() if self._etcd_traffic is not None else None,
            },
            "health": self._health() if self._health is not None else None,
            "route": route.public() if route else None,
            "releases": sorted(
                (r.public() for r in snapshot.releases.values()) if snapshot else [],
                key=lambda r: str(r["release"]),
            ),
            "requests": self._request_counts(),
            "pins": self._pins() if self._pins is not None else None,
            "signals": self._signals() if self._signals is not None else None,
            "budgets": self._budgets() if self._budgets is not None else None,
            "contracts": self._contracts() if self._contracts is not None else None,
            "process": {"pid": os.getpid(), "rss_bytes": rss, "cpu_percent": cpu},
            "event_loop_lag": self.metrics.loop_lag.status(),
        }
        return web.json_response(body)

    def _request_counts(self) -> dict[str, Any]:
        total = 0.0
        by_outcome: dict[str, float] = {}
        for (_agent, _endpoint, _release, outcome), value in self.metrics.requests.values.items():
            by_outcome[outcome] = by_outcome.get(outcome, 0) + value
            total += value
        errors = total - by_outcome.get("ok", 0)
        return {"total": int(total), "errors": int(errors), "by_outcome": by_outcome}

    async def metrics_endpoint(self, request: web.Request) -> web.Response:
        self._refresh_gauges()
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE})
