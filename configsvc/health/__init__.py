"""The fleet's health: sidecars' snapshots aggregated per release and category (``FleetHealth``),
the status API, and the health gate of rollouts (``PolicyGate``). The per-release figures are
``holdfast.signals.summary``'s, the same the sidecar's ``/status`` shows."""

from configsvc.health.api import StatusApi
from configsvc.health.fleet import FleetHealth, SidecarBeat, releases_status
from configsvc.health.gate import PolicyGate

__all__ = ["FleetHealth", "PolicyGate", "SidecarBeat", "StatusApi", "releases_status"]
