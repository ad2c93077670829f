"""Token budgets on the request path: reserve the worst case at open, settle on the real usage.

Applicable scopes of a request: ``global``, ``agent:<this agent>``, ``tenant:<X-Holdfast-Tenant>``
and ``session:<session>``, each only if a budget exists for it. The worst case is the prompt
estimate plus the output cap times the number of choices (each read by the request's dialect:
OpenAI chat's ``max_completion_tokens`` / ``max_tokens`` and ``n``...); a chat request without
a cap gets the tightest applicable ``request_cap`` (or the sidecar's default) written into the
one field its provider honours, so the provider cannot produce more than was reserved.

Prompt estimators (``--budget-prompt-estimator``, implemented by each dialect): ``bytes``
(default) is the UTF-8 size of the JSON of the prompt's parts, an upper bound -- BPE tokenizers
never make a token of less than one byte -- so reservations are never short and a fleet never
over-admits; ``chars`` is closer to the truth, so less is held back near the limit, but it can
be short for text that tokenizes badly, and that shortfall can then be overspent.

Settling: the provider's usage, or an estimate without it; what an agent that hangs up is
charged is in sidecar.budget_settle.

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

from holdfast import translate
from holdfast.dialects import Estimator, RequestRefused
from holdfast.keyspace.price import Price, usd
from holdfast.keyspace.records import Release
from holdfast.logs import get_logger
from sidecar.budgets.ledger import Ledger, Refusal, Reservation
from sidecar.budgets.meter import Meter
from sidecar.budgets.metrics import BudgetMetrics
from sidecar.budgets.settle import Settle
from sidecar.config import ConfigState, PriceTable
from sidecar.errors import BudgetExhausted, InvalidRequest, PriceUnknown
from sidecar.pipeline import Exchange, Observer

log = get_logger(__name__)

TENANT_HEADER: Final = "X-Holdfast-Tenant"
REMAINING_HEADER: Final = "X-Holdfast-Budget-Remaining"
DEGRADED_HEADER: Final = "X-Holdfast-Budget-Degraded"


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetOptions:
    agent: str
    default_cap: int
    estimator: Estimator
    first_slice_wait: float = 0.0  # seconds; 0: refuse at once


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
        waiting = self._waiting(exchange)
        if not waiting:
            return
        # New slices for other sidecars (or a tick that came before this sidecar's first report)
        # wake the wait too: it ends only when this sidecar's own slices arrive or time runs out.
        started = time.monotonic()
        deadline = started + self.options.first_slice_wait
        granted = False
        while (remaining := deadline - time.monotonic()) > 0:
            if not await self.first_slice(remaining):
                break
            if not self._waiting(exchange):
                granted = True
                break
        self.metrics.first_slice_waits.inc()
        log.info(
            "budget_first_slice_waited",
            scopes=waiting,
            granted=granted,
            ms=round((time.monotonic() - started) * 1000, 1),
        )

    def _waiting(self, exchange: Exchange) -> list[str]:
        """The fleet scopes of this request that have room but of which this sidecar holds
        nothing yet."""
        snapshot = self.config.current
        budgets = snapshot.of_kind("budgets") if snapshot is not None else {}
        if not budgets:
            return []
        now = self.clock()
        self.ledger.sync(budgets, now)
        return [
            m.scope
            for m in self.ledger.applicable(self._scopes(exchange), now)
            if m.budget.fleet and m.allowance == 0 and max(m.fleet_used, m.used) < m.limit
        ]

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
        request = exchange.request
        try:
            per_choice, choices = request.output_cap()
        except RequestRefused as exc:
            raise InvalidRequest(str(exc), param=exc.param) from exc
        cap = per_choice * choices if per_choice is not None else None
        written: int | None = None  # the per-choice cap this filter writes, if any
        if cap is None and exchange.operation == "chat":
            written = min(m.budget.request_cap or self.options.default_cap for m in meters)
            cap = written * choices
        prompt = request.prompt_estimate(self.options.estimator)
        amount = prompt + (cap or 0)
        price = self._price(exchange.resolved.release, meters)
        micros = price.micros(prompt, cap or 0) if price is not None else 0
        reservation, refusals = self.ledger.admit(meters, amount, now, micros=micros)
        if reservation is None:
            reservation, price = self._degrade(
                exchange, meters, refusals, (amount, prompt, cap or 0), now
            )
        if written is not None:  # after a degrade: the field depends on the serving provider
            request.write_output_cap(written, exchange.resolved.release.base_url)
        # A stream must end with usage to be settled on it; the agent sees it only if it asked.
        strip_usage = exchange.stream and not request.ask_stream_usage()
        self._soft_header(exchange, meters)
        return Settle(
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
        # A cheaper release whose provider cannot take this request (natively or translated,
        # holdfast.translate) is no fallback: refuse instead.
        foreign = target is not None and not _servable(exchange, target)
        if (
            target is None
            or foreign
            or not degradable
            or target.name == exchange.resolved.release.name
            or not target.model_for(exchange.operation)  # no embedding model: not a fallback
        ):
            if target_name and target is None:
                log.warning(
                    "budget_degrade_release_missing", scope=first.scope, release=target_name
                )
            if foreign:
                log.warning("budget_degrade_other_provider", scope=first.scope, release=target_name)
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
        exchange.request.set_model(target.model_for(exchange.operation))
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


def _servable(exchange: Exchange, target: Release) -> bool:
    """Can ``target``'s provider take this request, as it stands, natively or translated?"""
    dialect = exchange.dialect.name
    pair = translate.pair_for(dialect, target.provider)
    if pair is None:
        return translate.natively(dialect, target.provider)
    try:
        translate.refuse_features(pair, exchange.request.body)
    except translate.Untranslatable:
        return False
    return True
