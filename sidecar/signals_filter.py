"""Functional-health signals as a pipeline filter: one observation per proxied exchange.

It runs first in the chain, so a later filter's refusal (a budget, a contract) is seen too.
The hot path stays cheap: ``open`` reads two headers; streams are scanned with byte searches
(sidecar.answer_scan) and only a non-streaming answer is parsed as JSON, once.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from sidecar.answer_scan import Answer, StreamScan, scan_body
from sidecar.exchange import Exchange, Observer, Outcome
from sidecar.prices import PriceTable
from sidecar.signal_book import Observation, SignalBook, category_of
from sidecar.signal_metrics import SignalMetrics

CATEGORY_HEADER: Final = "X-Holdfast-Category"
# Another filter (tool contracts) reports the violations it saw in this response header.
VIOLATIONS_HEADER: Final = "X-Holdfast-Contract-Violations"


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
        self, book: SignalBook, metrics: SignalMetrics, prices: PriceTable | None = None
    ) -> None:
        self.book = book
        self.metrics = metrics
        self.prices = prices or PriceTable()

    def open(self, exchange: Exchange) -> Observer | None:
        return _SignalsObserver(self, exchange, category_of(exchange.headers.get(CATEGORY_HEADER)))

    def finish(
        self,
        exchange: Exchange,
        category: str,
        outcome: Outcome,
        answer: Answer | None,
        ttft: float | None,
    ) -> None:
        release = exchange.resolved.release
        violations = _count(exchange.response_headers.get(VIOLATIONS_HEADER))
        obs = Observation(
            release=release.name,
            category=category,
            session=exchange.resolved.session,
            code=outcome.code,
            reason=outcome.reason,
            latency_s=outcome.elapsed_s or exchange.elapsed(),
            ttft_s=ttft if exchange.stream else None,
            violations=violations,
        )
        if answer is not None:
            obs = dataclasses.replace(
                obs,
                tokens_in=answer.tokens_in,
                tokens_out=answer.tokens_out,
                usage_known=answer.usage_known,
                answered=True,
                empty=answer.empty,
                refusal=answer.refusal,
                tools=answer.tools,
                cost_usd=self.prices.cost(
                    release.name, release.model, answer.tokens_in, answer.tokens_out
                ),
            )
        self.book.record(obs)
        self.metrics.observe(obs)


def _count(header: str | None) -> int:
    if not header:
        return 0
    try:
        return max(0, min(int(header), 1000))
    except ValueError:
        return 0
