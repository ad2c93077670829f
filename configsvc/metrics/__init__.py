"""configsvc's ``/metrics``: the control plane as Prometheus sees it (etcd connectivity,
leadership, every rollout's state and aborts, each agent's sidecars); alerting rules in
``deploy/prometheus/`` read them beside the sidecars' own."""

from configsvc.metrics.collector import ControlPlaneCollector
from configsvc.metrics.endpoint import MetricsEndpoint

__all__ = ["ControlPlaneCollector", "MetricsEndpoint"]
