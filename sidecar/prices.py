"""The price table: US dollars per million input and output tokens, per release or per model.

A JSON file given with ``--prices``: ``{"r2": {"input_per_1m": 0.15, "output_per_1m": 0.6},
"gpt-4o": {...}}``. A release's own entry wins over its model's; a release with neither costs 0
(cost signals then say nothing, they never guess).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

MAX_PRICE_FILE_BYTES: Final = 1 << 20
PRICE_FIELDS: Final = frozenset({"input_per_1m", "output_per_1m"})


class PriceError(ValueError):
    """The price file is unreadable or malformed; the message says where."""


@dataclass(frozen=True, slots=True)
class Price:
    input_per_1m: float
    output_per_1m: float

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input_per_1m + tokens_out * self.output_per_1m) / 1_000_000


class PriceTable:
    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self._prices = dict(prices or {})

    def __len__(self) -> int:
        return len(self._prices)

    def cost(self, release: str, model: str, tokens_in: int, tokens_out: int) -> float:
        price = self._prices.get(release) or self._prices.get(model)
        return price.cost(tokens_in, tokens_out) if price is not None else 0.0


def parse_prices(data: object) -> PriceTable:
    if not isinstance(data, dict):
        raise PriceError("the price file must hold a JSON object of release or model names")
    prices: dict[str, Price] = {}
    for name, entry in data.items():
        if not isinstance(entry, dict) or set(entry) - PRICE_FIELDS:
            raise PriceError(f"price of {name!r:.80}: an object with {sorted(PRICE_FIELDS)}")
        values = []
        for field in sorted(PRICE_FIELDS):
            v = entry.get(field, 0.0)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise PriceError(f"price of {name!r:.80}: {field} must be a number")
            if v < 0:
                raise PriceError(f"price of {name!r:.80}: {field} must not be negative")
            values.append(float(v))
        prices[name] = Price(input_per_1m=values[0], output_per_1m=values[1])
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
