"""The fleet's price table (``prices/table``) and the cost arithmetic of budgets. Pure.

One record holds every price: USD per million input and output tokens, per release name or
model name (model names may hold ``/``, so they are not key segments). Being one record, a
change reaches every sidecar at once and no sidecar ever charges with half a table.

Money is integer: a price is kept in micro-dollars per million tokens (which is also
pico-dollars per token), and costs in micro-dollars. Prices and limits given in USD may have at
most 6 decimals, so they convert exactly (``Decimal``, never a float). A cost is
``(tokens_in * input + tokens_out * output) / 10**6`` micro-dollars, rounded *up* to a whole
micro-dollar: a reservation is never short of the charge it covers, and the charge of a request
exceeds its exact cost by less than one micro-dollar.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, Final, Self

from holdfast.keyspace import fields
from holdfast.keyspace.codec import RecordError, decode_record, encode_record
from holdfast.keyspace.records import validate_model

MICROS: Final = 1_000_000  # micro-dollars per dollar, and tokens per price unit
MAX_PRICE_USD: Final = Decimal(10_000)  # per 1M tokens; the dearest models cost ~$600
MAX_PRICE_MICROS: Final = int(MAX_PRICE_USD * MICROS)
MAX_PRICES: Final = 4096
TABLE: Final = "table"  # the one key segment under prices/
PRICE_FIELDS: Final = ("input_per_1m", "output_per_1m")


def usd_micros(value: object, *, what: str, maximum: int) -> int:
    """USD (a number or a decimal string, at most 6 decimals) as whole micro-dollars."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise RecordError(f"{what} must be a number of US dollars, got {value!r:.40}")
    try:
        amount = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation as exc:
        raise RecordError(f"{what} must be a number of US dollars, got {value!r:.40}") from exc
    if not amount.is_finite():
        raise RecordError(f"{what} must be a finite number, got {value!r:.40}")
    if amount < 0:
        raise RecordError(f"{what} must not be negative, got {value!r:.40}")
    micros = amount * MICROS
    if micros != micros.to_integral_value():
        raise RecordError(f"{what} has more than 6 decimals: {value!r:.40}")
    if micros > maximum:
        raise RecordError(f"{what} is over {Decimal(maximum) / MICROS} USD: {value!r:.40}")
    return int(micros)


def usd(micros: int) -> str:
    """Micro-dollars as a USD string without trailing zeros (``1500000`` -> ``1.5``)."""
    text = f"{Decimal(micros) / MICROS:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, slots=True)
class Price:
    """Micro-dollars per million tokens (= pico-dollars per token)."""

    input: int
    output: int

    def __post_init__(self) -> None:
        for name, v in (("input", self.input), ("output", self.output)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_PRICE_MICROS:
                raise RecordError(f"{name} price must be 0 to {MAX_PRICE_MICROS} micro-USD/1M")

    def micros(self, tokens_in: int, tokens_out: int) -> int:
        """Cost in micro-dollars, rounded up (exact integer arithmetic)."""
        return ceil_div(tokens_in * self.input + tokens_out * self.output, MICROS)

    def usd(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input + tokens_out * self.output) / (MICROS * MICROS)

    @classmethod
    def of_usd(cls, entry: Mapping[str, Any], *, name: str) -> Self:
        unknown = sorted(set(entry) - set(PRICE_FIELDS))
        if unknown:
            raise RecordError(f"price of {name!r:.80}: unknown field(s) {', '.join(unknown)}")
        values = [
            usd_micros(
                entry.get(f, 0), what=f"price of {name!r:.80}: {f}", maximum=MAX_PRICE_MICROS
            )
            for f in PRICE_FIELDS
        ]
        return cls(values[0], values[1])

    def public(self) -> dict[str, str]:
        return {"input_per_1m": usd(self.input), "output_per_1m": usd(self.output)}


def validate_price_name(name: str) -> str:
    """A release or model name (model names allow ``/``, ``:``, ``@``, ``+``)."""
    return validate_model(name)


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceTable:
    KIND: ClassVar[str] = "prices"
    prices: Mapping[str, Price] = field(default_factory=dict)
    updated_at: float = 0.0
    updated_by: str = ""

    def __post_init__(self) -> None:
        if len(self.prices) > MAX_PRICES:
            raise RecordError(f"a price table holds at most {MAX_PRICES} entries")
        for name, price in self.prices.items():
            validate_price_name(name)
            if not isinstance(price, Price):
                raise RecordError(f"price of {name!r:.80} is not a price")

    def lookup(self, release: str, model: str) -> Price | None:
        """The release's own price, else its model's."""
        return self.prices.get(release) or self.prices.get(model)

    def encode(self) -> bytes:
        return encode_record(
            self.KIND,
            {
                "prices": {n: [p.input, p.output] for n, p in self.prices.items()},
                "updated_at": self.updated_at,
                "updated_by": self.updated_by,
            },
        )

    @classmethod
    def decode(cls, data: bytes) -> Self:
        f = decode_record(data, kind=cls.KIND)
        raw = fields.submap(f, "prices") or {}
        prices: dict[str, Price] = {}
        for name, pair in raw.items():
            if not isinstance(pair, list | tuple) or len(pair) != 2:
                raise RecordError(f"price of {name!r:.80} must be [input, output]")
            prices[str(name)] = Price(pair[0], pair[1])
        return cls(
            prices=prices,
            updated_at=fields.optional_number(f, "updated_at", 0.0),
            updated_by=fields.text(f, "updated_by", optional=True),
        )

    def public(self) -> dict[str, Any]:
        return {
            "prices": {n: p.public() for n, p in sorted(self.prices.items())},
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
        }


def decode_prices(parts: tuple[str, ...], value: bytes) -> PriceTable:
    """Decoder of ``prices/table`` for the sidecar's config (see sidecar.kinds)."""
    if parts != (TABLE,):
        raise RecordError(f"prices live in prices/{TABLE}, not prices/{'/'.join(parts):.80}")
    return PriceTable.decode(value)
