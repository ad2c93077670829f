"""The filter chain's order, written once as data, and its one assembly.

A filter opens in this order on the way out and observes the answer in the reverse order on the
way back (holdfast's equivalent of Envoy's decoder and encoder filters). The reasons:

* ``tracing`` first: its span covers every filter's decision and the relay, a refusal too
  (when tracing is on; otherwise it is not in the chain at all);
* ``signals`` next: it must see every exchange, including a later filter's refusal, and the
  agent's own message for its category rules;
* ``prompts`` before the rest: they must see the final request, prompt text substituted;
* ``contracts`` next: a declared tool that breaks its pinned contract is refused (or rewritten)
  before anything is reserved for it;
* ``budget`` after every filter that may refuse for the request's own sake, so a refused
  request reserves nothing; it may write the output cap and move the exchange to a cheaper
  release (``degrade``);
* ``state`` after them: it records which release issued the state ids an answer carries
  (OpenAI Responses), and only after a budget's degrade is the serving release known;
* ``shadow`` last: only a request no filter refused is shadowed, with the body as it goes out
  (output cap included).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from sidecar.pipeline.exchange import ExchangeFilter

ORDER: Final = ("tracing", "signals", "prompts", "contracts", "budget", "state", "shadow")


class ChainError(ValueError):
    """The filters given cannot form the chain (unknown or repeated names)."""


def assemble(filters: Iterable[ExchangeFilter]) -> tuple[ExchangeFilter, ...]:
    """``filters`` in ``ORDER``; a filter whose name the order does not know is refused."""
    by_name: dict[str, ExchangeFilter] = {}
    for f in filters:
        if f.name not in ORDER:
            raise ChainError(f"filter {f.name!r} has no place in the chain {ORDER}")
        if f.name in by_name:
            raise ChainError(f"filter {f.name!r} given twice")
        by_name[f.name] = f
    return tuple(by_name[name] for name in ORDER if name in by_name)
