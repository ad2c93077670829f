"""Session pins: the table, the request-path lookup, first-turn claims in etcd, the background
writer and the copy on disk."""

from __future__ import annotations

from sidecar.pins.claim import PinClaims
from sidecar.pins.metrics import PinMetrics
from sidecar.pins.pinning import Pinning
from sidecar.pins.table import PinTable
from sidecar.pins.writer import PinWriter

__all__ = ["PinClaims", "PinMetrics", "PinTable", "PinWriter", "Pinning"]
