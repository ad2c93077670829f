"""Token budgets on the request path: reserve the worst case at open, settle on the real usage.

Applicable scopes of a request: ``global``, ``agent:<this agent>``, ``tenant:<X-Holdfast-Tenant>``
and ``session:<session>``, each only if a budget exists for it. The worst case is the prompt
estimate plus the completion cap (``max_tokens`` / ``max_completion_tokens`` times ``n``); a
chat request without a cap gets the tightest applicable ``request_cap`` (or the sidecar's
default) written into its body (one field: ``budget_usage.cap_field``), so the provider
cannot produce more than was reserved.

Settling: the provider's usage; without it, an estimate (marked so). An agent that hangs up
before a non-streamed answer arrived is charged the whole reservation (the provider may well
have completed it); a stream it cuts, the prompt estimate plus what the provider had sent.

Exhausted scope: 429 ``budget_exhausted`` naming scope, limit and use, with ``Retry-After``;
or, when every exhausted scope says ``degrade:RELEASE``, the request is served by that release
of the agent instead. A degraded request keeps the session's pin (it is not re-pinned: the
session returns to its release when the window turns) and is not metered by the scopes that
degraded it; other scopes still meter it.

Cost limits: the worst case is also priced (prompt estimate x input price + completion cap x
output price, rounded up to the micro-dollar) and reserved on every cost meter in the same
admission; settling charges the real usage at the same price. A cost-limited scope with no
price for the release (fleet table, then ``--prices`` file) refuses with 503 ``price_unknown``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from holdfast.keyspace.price import Price, usd
from holdfast.keyspace.records import Release
from holdfast.logs import get_logger
from sidecar.budget_ledger import Ledger, Meter, Refusal, Reservation
from sidecar.budget_metrics import BudgetMetrics
from sidecar.budget_usage import (
    Estimator,
    Usage,
    UsageError,
    body_usage,
    completion_cap,
    estimate_prompt,
    read_event,
    reply_estimate,
    write_cap,
)
from sidecar.config import ConfigState
from sidecar.errors import BudgetExhausted, InvalidRequest, PriceUnknown
from sidecar.exchange import Exchange, Observer, Outcome
from sidecar.prices import PriceTable

log = get_logger(__name__)

TENANT_HEADER: Final = "X-Holdfast-Tenant"
REMAINING_HEADER: Final = "X-Holdfast-Budget-Remaining"
DEGRADED_HEADER: Final = "X-Holdfast-Budget-Degraded"
HUNG_UP: Final = "client_disconnected"  # the outcome code of an agent that went away


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetOptions:
    agent: str
    default_cap: int
    estimator: Estimator
    first_slice_wait: float = 0.0  # seconds; 0: refuse at once


class _Settle(Observer):
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
    ) -> None:
        self.price = price
        self.ledger = ledger
        self.reservation = reservation
        self.prompt_estimate = prompt_estimate
        self.cap = cap  # the completion tokens reserved: the most the provider may produce
        self.release = release
        self.wants_events = stream
        self.strip_usage = strip_usage
        self.metrics = metrics
        self.usage: Usage | None = None
        self.deltas = 0
        self.status: int | None = None
        self.reply_tokens = 0

    def on_body(self, status: int, body: bytes) -> bytes:
        self.status = status
        if status < 400:
            self.usage = body_usage(body)
            if self.usage is None:
                self.reply_tokens = reply_estimate(body)
        return body

    def on_event(self, event: bytes) -> bytes | None:
        parsed = read_event(event)
        self.deltas += parsed.tokens
        if parsed.usage is not None:
            self.usage = parsed.usage
            if parsed.usage_only and self.strip_usage:
                return None  # the agent did not ask for it: it sees what it would have seen
        return event

    def close(self, outcome: Outcome) -> None:
        prompt, completion, estimated = self._charge(outcome)
        micros = self.price.micros(prompt, completion) if self.price is not None else 0
        Ledger.settle(self.reservation, prompt + completion, estimated=estimated, micros=micros)
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
        if self.wants_events:
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


class BudgetFilter:
    name = "budget"

    def __init__(
        self,
        ledger: Ledger,
        config: ConfigState,
        options: BudgetOptions,
        metrics: BudgetMetrics,
        *,
        prices: PriceTable | None = None,
        clock: Callable[[], float] = time.time,
        first_slice: Callable[[float], Awaitable[bool]] | None = None,
    ) -> None:
        self.first_slice = first_slice  # BudgetKeeper.wait_for_slices
        self.ledger = ledger
        self.config = config
        self.options = options
        self.metrics = metrics
        self.prices = prices if prices is not None else PriceTable(config=config)
        self.clock = clock

    def _scopes(self, exchange: Exchange) -> list[str]:
        scopes = ["global", f"agent:{self.options.agent}"]
        tenant = exchange.headers.get(TENANT_HEADER)
        if tenant:
            scopes.append(f"tenant:{tenant}")
        if exchange.resolved.session:
            scopes.append(f"session:{exchange.resolved.session}")
        return scopes

    async def await_first_slices(self, exchange: Exchange) -> None:
        """Before ``open``: a request under a fleet-wide budget of which this sidecar holds no
        slice yet (it just started, or the window just turned) while the fleet has room waits,
        at most ``first_slice_wait``, for the controller's slices instead of a 429 that says
        "this sidecar holds 0". Admission itself stays synchronous and atomic in ``open``."""
        if self.first_slice is None or self.options.first_slice_wait <= 0:
            return
        snapshot = self.config.current
        budgets = snapshot.of_kind("budgets") if snapshot is not None else {}
        if not budgets:
            return
        now = self.clock()
        self.ledger.sync(budgets, now)
        waiting = [
            m.scope
            for m in self.ledger.applicable(self._scopes(exchange), now)
            if m.budget.fleet and m.allowance == 0 and max(m.fleet_used, m.used) < m.limit
        ]
        if waiting:
            started = time.monotonic()
            granted = await self.first_slice(self.options.first_slice_wait)
            self.metrics.first_slice_waits.inc()
            log.info(
                "budget_first_slice_waited",
                scopes=waiting,
                granted=granted,
                ms=round((time.monotonic() - started) * 1000, 1),
            )

    def open(self, exchange: Exchange) -> Observer | None:
        snapshot = self.config.current
        if snapshot is None:
            return None
        budgets = snapshot.of_kind("budgets")
        if not budgets:
            return None
        now = self.clock()
        self.ledger.sync(budgets, now)
        meters = self.ledger.applicable(self._scopes(exchange), now)
        if not meters:
            return None
        body = exchange.body
        try:
            cap = completion_cap(body)
        except UsageError as exc:
            raise InvalidRequest(str(exc), param=exc.param) from exc
        written: int | None = None  # the per-choice cap this filter writes, if any
        if cap is None and exchange.operation == "chat":
            written = min(m.budget.request_cap or self.options.default_cap for m in meters)
            cap = written * (body.get("n") or 1)
        prompt = estimate_prompt(body, exchange.operation, self.options.estimator)
        amount = prompt + (cap or 0)
        price = self._price(exchange.resolved.release, meters)
        micros = price.micros(prompt, cap or 0) if price is not None else 0
        reservation, refusals = self.ledger.admit(meters, amount, now, micros=micros)
        if reservation is None:
            reservation, price = self._degrade(
                exchange, meters, refusals, (amount, prompt, cap or 0), now
            )
        if written is not None:  # after a degrade: the field depends on the serving provider
            write_cap(body, written, exchange.resolved.release.base_url)
        strip_usage = False
        if exchange.stream:
            options = body.get("stream_options")
            asked = isinstance(options, dict) and options.get("include_usage") is True
            body["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
            strip_usage = not asked
        self._soft_header(exchange, meters)
        return _Settle(
            self.ledger,
            reservation,
            prompt,
            cap=cap or 0,
            stream=exchange.stream,
            strip_usage=strip_usage,
            metrics=self.metrics,
            price=price,
            release=exchange.resolved.release.name,
        )

    def _price(self, release: Release, meters: list[Meter]) -> Price | None:
        """The release's price when a cost meter applies (None when none does)."""
        costed = [m for m in meters if m.cost]
        if not costed:
            return None
        price = self.prices.price(release.name, release.model)
        if price is None:
            scope = costed[0].scope
            log.warning("budget_price_unknown", release=release.name, scope=scope)
            raise PriceUnknown(
                f"cost budget {scope} applies but no price is known for release "
                f"{release.name!r} (model {release.model!r}); set one with `holdfastctl price "
                f"set {release.model} --input USD_PER_1M --output USD_PER_1M`",
                param="model",
            )
        return price

    def _degrade(
        self,
        exchange: Exchange,
        meters: list[Meter],
        refusals: list[Refusal],
        need: tuple[int, int, int],  # tokens, prompt estimate, completion cap
        now: float,
    ) -> tuple[Reservation, Price | None]:
        snapshot = self.config.current
        first = refusals[0]
        target_name = first.meter.budget.degrade_to
        target = snapshot.releases.get(target_name) if snapshot and target_name else None
        degradable = all(r.meter.budget.degrade_to == target_name for r in refusals)
        if target is None or not degradable or target.name == exchange.resolved.release.name:
            if target_name and target is None:
                log.warning(
                    "budget_degrade_release_missing", scope=first.scope, release=target_name
                )
            raise self._refuse(first)
        degrading = {r.scope for r in refusals}
        rest = [m for m in meters if m.scope not in degrading]
        price = self._price(target, rest)  # the cheaper release's own price
        amount, prompt, cap = need
        micros = price.micros(prompt, cap) if price is not None else 0
        reservation, more = self.ledger.admit(rest, amount, now, micros=micros)
        if reservation is None:
            raise self._refuse(more[0])
        for r in refusals:
            r.meter.tally.degraded += 1
        exchange.resolved = dataclasses.replace(exchange.resolved, release=target)
        exchange.body["model"] = target.model
        exchange.response_headers[DEGRADED_HEADER] = first.scope
        log.info("budget_degraded", scope=first.scope, release=target.name)
        return reservation, price

    @staticmethod
    def _refuse(refusal: Refusal) -> BudgetExhausted:
        err = BudgetExhausted(refusal.message(), param=refusal.scope)
        err.headers["Retry-After"] = str(refusal.retry_after)
        log.info("budget_refused", scope=refusal.scope, need=refusal.need)
        return err

    @staticmethod
    def _soft_header(exchange: Exchange, meters: list[Meter]) -> None:
        warned = [m for m in meters if m.remaining <= m.limit * (1.0 - m.budget.soft)]
        if warned:
            tightest = min(warned, key=lambda m: m.remaining / m.limit)
            left = f"{usd(tightest.remaining)} USD" if tightest.cost else str(tightest.remaining)
            exchange.response_headers[REMAINING_HEADER] = f"{left}; scope={tightest.scope}"
