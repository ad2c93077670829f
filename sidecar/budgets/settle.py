"""Settling a budgeted request once its exchange is over: the reservation becomes the charge.

The charge is the provider's usage; without it, an estimate (marked so). An agent that hangs up
before a non-streamed answer arrived is charged the whole reservation (the provider may well have
completed it); a stream it cuts, the prompt estimate plus what the provider had sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from holdfast.dialects import Answer, EventView, Usage
from holdfast.keyspace.price import Price
from holdfast.logs import get_logger
from sidecar.budgets.ledger import Ledger, Reservation
from sidecar.budgets.metrics import BudgetMetrics
from sidecar.pipeline import Observer, Outcome

log = get_logger(__name__)

HUNG_UP: Final = "client_disconnected"  # the outcome code of an agent that went away


class Settle(Observer):
    """Charges one admitted request's scopes what it really cost, once the exchange is over."""

    def __init__(
        self,
        ledger: Ledger,
        reservation: Reservation,
        prompt_estimate: int,
        *,
        cap: int,
        stream: bool,
        strip_usage: bool,
        metrics: BudgetMetrics,
        price: Price | None,
        release: str,
        on_settled: Callable[[], None] | None = None,
    ) -> None:
        self.on_settled = on_settled  # room may have appeared: requests waiting for it look
        self.price = price
        self.ledger = ledger
        self.reservation = reservation
        self.prompt_estimate = prompt_estimate
        self.cap = cap  # the completion tokens reserved: the most the provider may produce
        self.release = release
        self.stream = stream
        self.rewrites = stream and strip_usage
        self.strip_usage = strip_usage
        self.metrics = metrics
        self.usage: Usage | None = None
        self.deltas = 0
        self.status: int | None = None
        self.reply_tokens = 0

    def on_answer(self, status: int, answer: Answer | None) -> None:
        self.status = status
        if status < 400 and answer is not None:
            self.usage = answer.usage
            if self.usage is None:
                self.reply_tokens = answer.completion_estimate

    def on_event(self, view: EventView, data: bytes | None) -> bytes | None:
        # Without usage, each content-bearing delta counts one token -- how OpenAI-style
        # providers stream -- and the charge is marked estimated.
        self.deltas += view.content
        if view.usage is not None:
            self.usage = view.usage
        if view.usage_only and self.strip_usage:
            return None  # the agent did not ask for it: it sees what it would have seen
        return data

    def close(self, outcome: Outcome) -> None:
        prompt, completion, estimated = self._charge(outcome)
        micros = self.price.micros(prompt, completion) if self.price is not None else 0
        Ledger.settle(self.reservation, prompt + completion, estimated=estimated, micros=micros)
        if self.on_settled is not None:
            self.on_settled()
        self.metrics.charged(
            prompt, completion, estimated=estimated, micros=micros, release=self.release
        )
        if estimated and (prompt or completion):
            log.info(
                "budget_charge_estimated",
                outcome=outcome.code,
                prompt_tokens=prompt,
                completion_tokens=completion,
            )

    def _charge(self, outcome: Outcome) -> tuple[int, int, bool]:
        if self.usage is not None:
            return self.usage.prompt, self.usage.completion, False
        if self.status is not None and self.status >= 400:
            return 0, 0, False  # the provider refused it: nothing produced
        hung_up = outcome.code == HUNG_UP
        if self.stream:
            # A stream: what the provider produced before it ended or was cut (the relay
            # drains what it had already sent). An agent that hangs up before the first
            # chunk still had its prompt read by the provider.
            if outcome.status == 200 or self.deltas > 0 or hung_up:
                return self.prompt_estimate, self.deltas, True
            return 0, 0, False
        status = self.status if self.status is not None else outcome.status
        if status is not None and status < 400:
            return self.prompt_estimate, self.reply_tokens, True
        if hung_up:
            # The agent left before the answer arrived. Providers finish (and bill) a
            # non-streamed request whoever is still listening, so the outcome is unknown:
            # charge the whole reservation -- else an agent whose own timeout always fires
            # would spend without limit.
            return self.prompt_estimate, self.cap, True
        return 0, 0, False  # refused, unreachable, or a provider error: nothing produced
