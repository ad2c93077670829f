"""What on-call reads: ``/healthz``, ``/readyz``, ``/status``, ``/metrics``, and the health
snapshot published to etcd."""

from __future__ import annotations

from sidecar.ops.endpoints import ControlPlane, Ops
from sidecar.ops.health import HealthPublisher, HealthSources
from sidecar.ops.metrics import SidecarMetrics

__all__ = ["ControlPlane", "HealthPublisher", "HealthSources", "Ops", "SidecarMetrics"]
