"""Session pins: the table, the request-path lookup, first-turn claims in etcd, the background
writer and the copy on disk; and, written and kept the same way, which release issued each
provider-held state id (a Responses answer's id)."""

from __future__ import annotations

from sidecar.pins.claim import PinClaims
from sidecar.pins.metrics import PinMetrics
from sidecar.pins.pinning import Pinning
from sidecar.pins.state_lookup import StateLookup
from sidecar.pins.state_persist import StateSaver, states_path
from sidecar.pins.state_writer import StateWriter
from sidecar.pins.states import StateTable
from sidecar.pins.table import PinTable
from sidecar.pins.writer import PinWriter

__all__ = [
    "PinClaims",
    "PinMetrics",
    "PinTable",
    "PinWriter",
    "Pinning",
    "StateLookup",
    "StateSaver",
    "StateTable",
    "StateWriter",
    "states_path",
]
