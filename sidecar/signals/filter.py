"""Functional-health signals as a pipeline filter: one observation per proxied exchange.

It runs first in the chain, so a later filter's refusal (a budget, a contract) is seen too,
and the category rules see the agent's own message. The hot path stays cheap: ``open`` reads
two headers (and, only when the route has category rules, the head of the last user message);
streams are scanned with byte searches (sidecar.answer_scan) and only a non-streaming answer is
parsed as JSON, once. The category is capped per release once, for the book and the metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from holdfast.keyspace import Route
from sidecar.budgets.prices import PriceTable
from sidecar.contracts.filter import VIOLATION_HEADER
from sidecar.pipeline.exchange import Exchange, Observer, Outcome
from sidecar.signals.answer_scan import Answer, StreamScan, scan_body
from sidecar.signals.book import Observation, SignalBook
from sidecar.signals.categories import Categorizer
from sidecar.signals.metrics import SignalMetrics


class _SignalsObserver(Observer):
    __slots__ = ("answer", "category", "exchange", "owner", "scan", "ttft")

    def __init__(self, owner: SignalsFilter, exchange: Exchange, category: str) -> None:
        self.owner = owner
        self.exchange = exchange
        self.category = category
        self.scan: StreamScan | None = StreamScan() if exchange.stream else None
        self.answer: Answer | None = None
        self.ttft: float | None = None

    def on_body(self, status: int, body: bytes) -> bytes:
        if status == 200 and self.exchange.operation == "chat":
            self.answer = scan_body(body, self.exchange.body)
        return body

    def on_chunk(self, chunk: bytes) -> None:
        if self.ttft is None:
            self.ttft = self.exchange.elapsed()
        if self.scan is not None:
            self.scan.feed(chunk)

    def close(self, outcome: Outcome) -> None:
        answer = self.answer
        if answer is None and self.scan is not None and outcome.completed:
            answer = self.scan.answer(self.exchange.body)
        self.owner.finish(self.exchange, self.category, outcome, answer, self.ttft)


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
        self.prices = prices or PriceTable()
        self.categories = Categorizer(route)
        metrics.sessions.source = book.spreads

    def open(self, exchange: Exchange) -> Observer | None:
        return _SignalsObserver(self, exchange, self.categories.of(exchange.headers, exchange.body))

    def finish(
        self,
        exchange: Exchange,
        category: str,
        outcome: Outcome,
        answer: Answer | None,
        ttft: float | None,
    ) -> None:
        release = exchange.resolved.release
        # One construction on the request path (not one plus a dataclasses.replace).
        a = answer if answer is not None else _NO_ANSWER
        obs = Observation(
            release=release.name,
            category=self.book.category(release.name, category),
            session=exchange.resolved.session,
            operation=exchange.operation,
            code=outcome.code,
            reason=outcome.reason,
            latency_s=outcome.elapsed_s or exchange.elapsed(),
            ttft_s=ttft if exchange.stream else None,
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


_NO_ANSWER: Final = Answer(
    tokens_in=0, tokens_out=0, usage_known=False, empty=False, refusal=False, tools=()
)


def _violations(header: str | None, outcome: Outcome) -> int:
    """Tool-contract violations of this exchange: the contract filter lists them in its response
    header (comma-separated labels); a call it refused outright counts as one."""
    found = sum(1 for label in header.split(",") if label.strip()) if header else 0
    if not found and "contract_violation" in f"{outcome.code} {outcome.reason}":
        found = 1
    return min(found, 1000)
