"""Prometheus metrics of one sidecar, in a registry of its own (no global state between apps).

Names follow the OpenTelemetry GenAI conventions where they exist
(gen_ai.client.operation.duration -> gen_ai_client_operation_duration_seconds).
"""

from __future__ import annotations

from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from sidecar.contract_stats import ContractStats
from sidecar.flag_metrics import FlagMetrics
from sidecar.pin_metrics import PinMetrics
from sidecar.shadow_metrics import ShadowMetrics
from sidecar.signal_metrics import SignalMetrics

LATENCY_BUCKETS: Final = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST


class SidecarMetrics:
    def __init__(self, agent: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "holdfast_requests",
            "Requests handled, by endpoint, release and outcome class.",
            ["agent", "endpoint", "release", "outcome"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "Time from request received to response finished.",
            ["agent", "gen_ai_operation_name", "holdfast_release"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Streaming: time from request received to the first relayed chunk.",
            ["agent", "holdfast_release"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.config_revision = Gauge(
            "holdfast_config_revision",
            "etcd revision of the applied configuration.",
            registry=self.registry,
        )
        self.config_stale = Gauge(
            "holdfast_config_stale",
            "1 when serving on configuration older than the stale bound.",
            registry=self.registry,
        )
        self.etcd_connected = Gauge(
            "holdfast_etcd_connected",
            "1 while the control-plane watch is healthy.",
            registry=self.registry,
        )
        self.records_rejected = Counter(
            "holdfast_config_records_rejected",
            "Records refused by validation (previous kept).",
            registry=self.registry,
        )
        self.pins = PinMetrics(self.registry, agent)
        self.shadow = ShadowMetrics(self.registry, agent)
        self.signals = SignalMetrics(self.registry, agent)
        self.contracts = ContractStats(self.registry, agent)  # .stats(): per release and tool
        self.flags = FlagMetrics(self.registry)
        self.agent = agent
        self._finished: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def request_finished(self, operation: str, release: str, outcome: str, seconds: float) -> None:
        """Count one request; label children are cached, since labels() costs on every call."""
        key = (operation, release, outcome)
        children = self._finished.get(key)
        if children is None:
            children = (
                self.requests.labels(self.agent, operation, release, outcome),
                self.duration.labels(self.agent, operation, release),
            )
            self._finished[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
