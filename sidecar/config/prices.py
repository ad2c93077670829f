"""Prices: US dollars per million input and output tokens, per release or per model.

One lookup serves both cost limits of budgets and the cost signals of health:

1. the fleet's table, ``prices/table`` in etcd (``holdfastctl price set``), so every sidecar
   of the environment charges the same: the release's own entry, else its model's;
2. only when the fleet table has neither, the sidecar's ``--prices FILE`` (same rule).

The file is JSON: ``{"r2": {"input_per_1m": 0.15, "output_per_1m": 0.6}, "gpt-4o": {...}}``,
validated like the fleet table (numbers >= 0, at most 6 decimals, at most 10000 USD per 1M
tokens, no other fields). A release with no price anywhere costs 0 for signals (they never
guess) and cannot be admitted under a cost limit (sidecar.budgets.filter).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from holdfast.keyspace import RecordError
from holdfast.keyspace.price import TABLE, Price
from holdfast.keyspace.price import PriceTable as FleetTable
from sidecar.config.state import ConfigState

MAX_PRICE_FILE_BYTES: Final = 1 << 20

__all__ = ["MAX_PRICE_FILE_BYTES", "Price", "PriceError", "PriceTable", "load_prices"]


class PriceError(ValueError):
    """The price file is unreadable or malformed; the message says where."""


class PriceTable:
    """The fleet table (from the sidecar's config) with the file's entries as fallback."""

    def __init__(
        self, prices: Mapping[str, Price] | None = None, *, config: ConfigState | None = None
    ) -> None:
        self._file = dict(prices or {})
        self._config = config

    def __len__(self) -> int:
        return len(self._file)

    def with_fleet(self, config: ConfigState) -> PriceTable:
        """The same file entries, behind the fleet table of ``config``."""
        return PriceTable(self._file, config=config)

    def fleet(self) -> FleetTable | None:
        snapshot = self._config.current if self._config is not None else None
        table = snapshot.of_kind("prices").get(TABLE) if snapshot is not None else None
        return table if isinstance(table, FleetTable) else None

    def price(self, release: str, model: str) -> Price | None:
        fleet = self.fleet()
        found = fleet.lookup(release, model) if fleet is not None else None
        return found or self._file.get(release) or self._file.get(model)

    def cost(self, release: str, model: str, tokens_in: int, tokens_out: int) -> float:
        """USD, or 0 when nothing prices the release (signals never guess)."""
        price = self.price(release, model)
        return price.usd(tokens_in, tokens_out) if price is not None else 0.0


def parse_prices(data: object) -> PriceTable:
    if not isinstance(data, dict):
        raise PriceError("the price file must hold a JSON object of release or model names")
    prices: dict[str, Price] = {}
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise PriceError(f"price of {name!r:.80}: an object with input_per_1m, output_per_1m")
        if any(isinstance(v, str) for v in entry.values()):
            raise PriceError(f"price of {name!r:.80}: prices must be JSON numbers")
        try:
            prices[name] = Price.of_usd(entry, name=name)
        except RecordError as exc:
            raise PriceError(str(exc)) from exc
    return PriceTable(prices)


def load_prices(path: Path | None) -> PriceTable:
    if path is None:
        return PriceTable()
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise PriceError(f"cannot read the price file {path}: {exc.strerror}") from exc
    if len(raw) > MAX_PRICE_FILE_BYTES:
        raise PriceError(f"the price file {path} is over {MAX_PRICE_FILE_BYTES} bytes")
    try:
        return parse_prices(json.loads(raw))
    except ValueError as exc:
        if isinstance(exc, PriceError):
            raise
        raise PriceError(f"the price file {path} is not valid JSON: {exc}") from exc
