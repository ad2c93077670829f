"""Functional-health signals as a pipeline filter: one observation per proxied exchange.

It runs first in the chain, so a later filter's refusal (a budget, a contract) is seen too,
and the category rules see the agent's own message. The hot path stays cheap: ``open`` reads
two headers (and, only when the route has category rules, the head of the last user message);
the answer is read from the neutral view the dialect decoded once for every filter
(sidecar.signals.answer). The category is capped per release once, for the book and the metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from holdfast.dialects import Answer, EventView, ToolCall
from holdfast.keyspace import Route
from sidecar.config import PriceTable
from sidecar.contracts import VIOLATION_HEADER
from sidecar.pipeline import SUPERSEDED, Exchange, Observer, Outcome
from sidecar.signals.answer import NO_ANSWER, StreamSummary, Summary, of_answer
from sidecar.signals.book import Observation, SignalBook
from sidecar.signals.categories import Categorizer
from sidecar.signals.metrics import SignalMetrics


class _SignalsObserver(Observer):
    __slots__ = ("category", "exchange", "owner", "stream", "summary")

    def __init__(self, owner: SignalsFilter, exchange: Exchange, category: str) -> None:
        self.owner = owner
        self.exchange = exchange
        self.category = category
        self.stream: StreamSummary | None = StreamSummary() if exchange.stream else None
        self.summary: Summary | None = None

    def on_answer(self, status: int, answer: Answer | None) -> None:
        if status == 200 and answer is not None and self.exchange.operation == "chat":
            self.summary = of_answer(answer, self.exchange.request)

    def on_event(self, view: EventView, data: bytes | None) -> bytes | None:
        if self.stream is not None:
            self.stream.feed(view)
        return data

    def on_end(self, calls: Sequence[ToolCall]) -> None:
        if self.stream is not None:
            self.stream.calls(calls)

    def close(self, outcome: Outcome) -> None:
        if outcome.code == SUPERSEDED:
            return  # served again at another release: that exchange is the one to count
        summary = self.summary
        if summary is None and self.stream is not None and outcome.completed:
            summary = self.stream.summary(self.exchange.request)
        self.owner.finish(self.exchange, self.category, outcome, summary)


class SignalsFilter:
    name = "signals"

    def __init__(
        self,
        book: SignalBook,
        metrics: SignalMetrics,
        prices: PriceTable | None = None,
        *,
        route: Callable[[], Route | None] | None = None,
    ) -> None:
        """``route``: the agent's current route, whose category rules apply (None: none)."""
        self.book = book
        self.metrics = metrics
        # not `prices or ...`: a table with no --prices file entries is empty yet has the fleet's
        self.prices = prices if prices is not None else PriceTable()
        self.categories = Categorizer(route)
        metrics.sessions.source = book.spreads

    def open(self, exchange: Exchange) -> Observer | None:
        category = self.categories.of(exchange.headers, exchange.request)
        return _SignalsObserver(self, exchange, category)

    def finish(
        self,
        exchange: Exchange,
        category: str,
        outcome: Outcome,
        answer: Summary | None,
    ) -> None:
        release = exchange.resolved.release
        # One construction on the request path (not one plus a dataclasses.replace).
        a = answer if answer is not None else NO_ANSWER
        obs = Observation(
            release=release.name,
            category=self.book.category(release.name, category),
            session=exchange.resolved.session,
            operation=exchange.operation,
            code=outcome.code,
            reason=outcome.reason,
            latency_s=outcome.elapsed_s or exchange.elapsed(),
            ttft_s=exchange.first_byte if exchange.stream else None,
            violations=_violations(exchange.response_headers.get(VIOLATION_HEADER), outcome),
            tokens_in=a.tokens_in,
            tokens_out=a.tokens_out,
            usage_known=a.usage_known,
            answered=answer is not None,
            empty=a.empty,
            refusal=a.refusal,
            tools=a.tools,
            cost_usd=(
                self.prices.cost(release.name, release.model, a.tokens_in, a.tokens_out)
                if answer is not None
                else 0.0
            ),
        )
        self.book.record(obs)
        self.metrics.observe(obs)


def _violations(header: str | None, outcome: Outcome) -> int:
    """Tool-contract violations of this exchange: the contract filter lists them in its response
    header (comma-separated labels); a call it refused outright counts as one."""
    found = sum(1 for label in header.split(",") if label.strip()) if header else 0
    if not found and "contract_violation" in f"{outcome.code} {outcome.reason}":
        found = 1
    return min(found, 1000)
