"""The sidecar's configuration: etcd records decoded and validated into snapshots swapped in
atomically, and the last-known-good snapshot on disk."""

from __future__ import annotations

from sidecar.config.kinds import CONFIG_KINDS
from sidecar.config.persist import write_atomically
from sidecar.config.prices import PriceError, PriceTable, load_prices
from sidecar.config.ranges import sidecar_ranges
from sidecar.config.state import ConfigSnapshot, ConfigState, known_models, wanted_key

__all__ = [
    "CONFIG_KINDS",
    "ConfigSnapshot",
    "ConfigState",
    "PriceError",
    "PriceTable",
    "known_models",
    "load_prices",
    "sidecar_ranges",
    "wanted_key",
    "write_atomically",
]
