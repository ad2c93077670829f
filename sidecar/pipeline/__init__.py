"""The request pipeline: the exchange every filter sees, the filter chain and its order, and the
proxy that relays an answer (streamed or not) through them."""

from __future__ import annotations

from sidecar.pipeline.chain import assemble
from sidecar.pipeline.exchange import SUPERSEDED, Exchange, ExchangeFilter, Observer, Outcome
from sidecar.pipeline.proxy import DIALECT_KEY, REQUEST_ID_KEY, Proxy, StateRouter, served_by

__all__ = [
    "DIALECT_KEY",
    "REQUEST_ID_KEY",
    "SUPERSEDED",
    "Exchange",
    "ExchangeFilter",
    "Observer",
    "Outcome",
    "Proxy",
    "StateRouter",
    "assemble",
    "served_by",
]
