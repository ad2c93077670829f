"""Prometheus metrics of one sidecar, in a registry of its own (no global state between apps).

Names follow the OpenTelemetry GenAI conventions where they exist
(gen_ai.client.operation.duration -> gen_ai_client_operation_duration_seconds). Latency and time
to first token are observed by the signals filter (sidecar.signal_metrics), which knows each
request's category; this class counts requests by endpoint and outcome.
"""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from holdfast.tally import CounterFamily, Tally
from sidecar.contracts import ContractStats
from sidecar.flags import FlagMetrics
from sidecar.ops.loop_lag import LoopLag
from sidecar.pins import PinMetrics
from sidecar.shadow import ShadowMetrics
from sidecar.signals import SignalMetrics

CONTENT_TYPE: Final = CONTENT_TYPE_LATEST


class SidecarMetrics:
    def __init__(self, agent: str) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = CounterFamily(
            "holdfast_requests",
            "Requests handled, by endpoint, release and outcome class.",
            ["agent", "endpoint", "release", "outcome"],
        )
        Tally(self.registry, self.requests)
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
        self.loop_lag = LoopLag(self.registry, agent)  # sampling once the process starts it

    def request_finished(self, operation: str, release: str, outcome: str, seconds: float) -> None:
        """Count one request (``seconds`` is observed with the request's category by the
        signals filter)."""
        self.requests.inc((self.agent, operation, release, outcome))

    def render(self) -> bytes:
        return generate_latest(self.registry)
