"""What on-call reads: ``/healthz``, ``/readyz``, ``/status``, ``/metrics``, and the health
snapshot: beats to configsvc's replicas, presence in etcd."""

from __future__ import annotations

from sidecar.ops.beats import BeatSender, Replicas
from sidecar.ops.endpoints import ControlPlane, Ops
from sidecar.ops.feed import WatchFeed
from sidecar.ops.health import HealthPublisher, HealthSources
from sidecar.ops.metrics import SidecarMetrics

__all__ = [
    "BeatSender",
    "ControlPlane",
    "HealthPublisher",
    "HealthSources",
    "Ops",
    "Replicas",
    "SidecarMetrics",
    "WatchFeed",
]
