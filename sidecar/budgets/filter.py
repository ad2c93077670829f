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

Waiting: before ``open`` (``await_admission``, the awaited hook the proxy runs first), a
request that does not fit now but could by waiting -- reservations in flight settle, or the
controller moves slices here (sidecar.budgets.admission) -- waits in the queue of its scope set
(sidecar.budgets.queue) for at most the tightest ``queue_timeout`` of its budgets; the queue
reserves for it when it fits, and ``open`` takes that reservation. Everything else is decided in
``open``, synchronously: the check-and-reserve of a request that did not wait is atomic there.

Refused: 429 ``budget_exhausted`` when waiting cannot help (the budget is spent), 429
``budget_busy`` when it could have but the request did not wait (its wait ran out, the queue was
full, waiting is off, or the first slice never came), each naming scope, limit and use, with
``Retry-After`` and ``X-Holdfast-Budget-Refusal: spent | could_not_wait``;
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

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import orjson

from holdfast.dialects import Estimator, RequestRefused
from holdfast.keyspace.price import Price, usd
from holdfast.keyspace.records import Release
from holdfast.logs import get_logger
from sidecar.budgets.admission import Admit, Need, Refuse, Wait, decide
from sidecar.budgets.ledger import Ledger, Refusal, Reservation
from sidecar.budgets.meter import Meter
from sidecar.budgets.metrics import BudgetMetrics
from sidecar.budgets.queue import AdmissionQueue, Granted, Plan, Waiter, needs_of
from sidecar.budgets.settle import Settle
from sidecar.config import ConfigState, PriceTable
from sidecar.errors import BudgetBusy, BudgetExhausted, InvalidRequest, PriceUnknown, SidecarError
from sidecar.pipeline import Exchange, Observer

log = get_logger(__name__)

TENANT_HEADER: Final = "X-Holdfast-Tenant"
REMAINING_HEADER: Final = "X-Holdfast-Budget-Remaining"
DEGRADED_HEADER: Final = "X-Holdfast-Budget-Degraded"
REFUSAL_HEADER: Final = "X-Holdfast-Budget-Refusal"  # spent | could_not_wait
FITTED_HEADER: Final = "X-Holdfast-Budget-Fitted"  # the lowered per-choice cap; scope=...
SPENT: Final = "spent"
COULD_NOT_WAIT: Final = "could_not_wait"
DEFAULT_QUEUE_MAX: Final = 1000
DEFAULT_QUEUE_MAX_BYTES: Final = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetOptions:
    agent: str
    default_cap: int
    estimator: Estimator
    first_slice_wait: float = 0.0  # seconds; 0: refuse at once


@dataclass(slots=True)
class _Waited:
    """What the wait before ``open`` left for it: a reservation, or why there was none."""

    granted: Granted | None = None
    why: str = ""  # why the request did not wait, or stopped waiting (for the refusal)
    spent: bool = False  # the queue found that waiting could not help


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
        queue: AdmissionQueue | None = None,
        slices_live: Callable[[], bool] | None = None,
    ) -> None:
        self.first_slice = first_slice  # BudgetKeeper.wait_for_slices
        self.ledger = ledger
        self.config = config
        self.options = options
        self.metrics = metrics
        self.prices = prices if prices is not None else PriceTable(config=config)
        self.clock = clock
        self.slices_live = slices_live or (lambda: True)
        self.queue = queue or AdmissionQueue(
            ledger,
            max_waiting=DEFAULT_QUEUE_MAX,
            max_bytes=DEFAULT_QUEUE_MAX_BYTES,
            slices_live=self.slices_live,
            clock=clock,
        )
        metrics.bind_queue(self.queue)
        config.on_change(lambda _snapshot: self.queue.pump())  # a limit raised: room
        self._waited: dict[int, _Waited] = {}  # id(exchange) -> its wait's result, until open

    def _scopes(self, exchange: Exchange) -> list[str]:
        scopes = ["global", f"agent:{self.options.agent}"]
        tenant = exchange.headers.get(TENANT_HEADER)
        if tenant:
            scopes.append(f"tenant:{tenant}")
        if exchange.resolved.session:
            scopes.append(f"session:{exchange.resolved.session}")
        return scopes

    def _meters(self, exchange: Exchange) -> list[Meter]:
        snapshot = self.config.current
        budgets = snapshot.of_kind("budgets") if snapshot is not None else {}
        if not budgets:
            return []
        now = self.clock()
        self.ledger.sync(budgets, now)
        return self.ledger.applicable(self._scopes(exchange), now)

    def _need(self, exchange: Exchange, meters: list[Meter], prompt: int | None = None) -> Need:
        """The request's worst case on ``meters`` (the prompt estimate unless given)."""
        request = exchange.request
        try:
            per_choice, choices = request.output_cap()
        except RequestRefused as exc:
            raise InvalidRequest(str(exc), param=exc.param) from exc
        write = False
        if per_choice is None and exchange.operation == "chat":
            per_choice = min(m.budget.request_cap or self.options.default_cap for m in meters)
            write = True
        if prompt is None:
            prompt = request.prompt_estimate(self.options.estimator)
        price = self._price(exchange.resolved.release, meters)
        return Need(prompt, per_choice, choices, price, write)

    # -- waiting, before open ------------------------------------------------------------

    async def await_admission(self, exchange: Exchange) -> None:
        """Before ``open``: wait for this sidecar's first slice, then for room, when waiting
        can help; ``open`` decides (and, for a request that did not wait, reserves)."""
        meters = self._meters(exchange)
        if not meters:
            return
        first = await self._await_first_slices(exchange, meters)
        try:
            if first is not None:
                meters = self._meters(exchange)  # the wait may have brought slices
            key = tuple(m.id for m in meters)
            if not self.queue.busy(key) and self._fits_at_most(exchange, meters):
                return  # open admits it at once: nothing awaits in between
            need = self._need(exchange, meters)
        except SidecarError:
            return  # open raises it, with everything the chain needs to know
        decision = decide(meters, need, slices_live=self.slices_live())
        if isinstance(decision, Refuse):
            return  # spent: open refuses
        if isinstance(decision, Admit) and not self.queue.busy(key):
            return  # open admits it at once: nothing awaits in between
        timeout = min(m.budget.queue_timeout for m in meters)
        if first is False:
            self._note(exchange, _Waited(why="no slice came in time"))
            return
        if timeout <= 0:
            self._note(exchange, _Waited(why="waiting is off (queue timeout 0)"))
            return
        await self._wait(exchange, key, need, limit=timeout)

    async def _wait(
        self, exchange: Exchange, key: tuple[str, ...], need: Need, *, limit: float
    ) -> None:
        loop = asyncio.get_running_loop()
        prompt = need.prompt  # what a waiting request's prompt is estimated at stays the same

        def plan() -> Plan | None:
            meters = self._meters(exchange)
            if not meters:
                return None
            return meters, self._need(exchange, meters, prompt)

        size = _body_size(exchange)
        waiter = Waiter(key, size, plan, loop.create_future())
        meters, _ = plan() or ([], need)
        now = decide(meters, need, slices_live=self.slices_live())
        waiter.needs = needs_of(meters, now.need if isinstance(now, Wait) else need)
        if not self.queue.join(waiter):
            self._note(exchange, _Waited(why="the budget queue is full"))
            self.metrics.waited(0.0, "queue_full")
            return
        self.queue.pump()  # the head may be decidable now
        started = time.monotonic()
        result = "hung_up"
        try:
            async with asyncio.timeout(limit):
                outcome = await asyncio.shield(waiter.future)
            if isinstance(outcome, Granted):
                result = "admitted"
                self._note(exchange, _Waited(granted=outcome))
            elif isinstance(outcome, Refuse):
                result = SPENT
                self._note(exchange, _Waited(spent=True))
            else:
                result = "unmetered"
        except TimeoutError:
            result = "timeout"
            self._note(exchange, _Waited(why=f"its wait ran out ({limit:g}s, the queue timeout)"))
        finally:
            waited = time.monotonic() - started
            for m in meters:
                m.tally.waited(round(waited * 1000))
            if result != "admitted":
                self.queue.leave(waiter)  # a reservation made at the last moment is released
            self.metrics.waited(waited, result)
            log.info("budget_waited", scopes=list(key), result=result, ms=round(waited * 1e3, 1))

    def _note(self, exchange: Exchange, waited: _Waited) -> None:
        """Keep ``waited`` for this exchange's ``open``; if the chain refuses before the budget
        opens, the handler's end releases what was reserved for it."""
        marker = id(exchange)
        self._waited[marker] = waited
        task = asyncio.current_task()
        if task is not None:
            task.add_done_callback(lambda _task: self._unclaimed(marker, waited))

    def _unclaimed(self, marker: int, waited: _Waited) -> None:
        if self._waited.get(marker) is waited:
            del self._waited[marker]
        if waited.granted is not None and not waited.granted.reservation.settled:
            Ledger.release(waited.granted.reservation)
            self.queue.pump()

    async def _await_first_slices(self, exchange: Exchange, meters: list[Meter]) -> bool | None:
        """A request under a fleet-wide budget of which this sidecar holds no slice yet (it
        just started, or the window just turned) while the fleet has room waits, at most
        ``first_slice_wait``, for the controller's slices instead of a 429 that says "this
        sidecar holds 0". None: nothing to wait for; else whether the slices came."""
        if self.first_slice is None or self.options.first_slice_wait <= 0:
            return None
        waiting = self._waiting(exchange, meters)
        if not waiting:
            return None
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
        return granted

    def _fits_at_most(self, exchange: Exchange, meters: list[Meter]) -> bool:
        """Whether the request fits now even with its whole body counted as prompt tokens (a
        bound of any estimate, found without estimating): the common case, decided cheaply."""
        length = exchange.headers.get("Content-Length", "")
        if not length.isdigit():
            return False
        bound = self._need(exchange, meters, prompt=int(length))
        return all(m.fits(bound.on(m)) for m in meters)

    def _waiting(self, exchange: Exchange, meters: list[Meter] | None = None) -> list[str]:
        """The fleet scopes of this request that have room but of which this sidecar was granted
        nothing yet (one that gave its slice back waits in the queue, which says so)."""
        return [
            m.scope
            for m in (meters if meters is not None else self._meters(exchange))
            if m.budget.fleet
            and m.allowance == 0
            and not m.sliced
            and max(m.fleet_used, m.used) < m.limit
        ]

    # -- admission ----------------------------------------------------------------------

    def open(self, exchange: Exchange) -> Observer | None:
        waited = self._waited.pop(id(exchange), None)
        granted = waited.granted if waited is not None else None
        taken: tuple[Reservation, Need] | None = None
        try:
            meters = self._meters(exchange)
            if not meters:
                return None
            need = self._need(exchange, meters)
            if granted is not None:
                taken = self._take(granted, meters, need)
        finally:
            if granted is not None and taken is None:
                Ledger.release(granted.reservation)  # refused, unmetered, or admitted afresh
                self.queue.pump()
        price = need.price
        if taken is not None:
            reservation, need = taken
        else:
            now = self.clock()
            decision = decide(meters, need, slices_live=self.slices_live())
            if isinstance(decision, Admit):
                need = decision.need
            admitted, refusals = self.ledger.admit(meters, need.tokens, now, micros=need.micros)
            if admitted is None:
                why = waited.why if waited is not None else ""
                spent = isinstance(decision, Refuse) or (waited is not None and waited.spent)
                reason = SPENT if spent else COULD_NOT_WAIT
                admitted, price, need = self._degrade(
                    exchange, meters, refusals, need, now, (reason, why)
                )
            reservation = admitted
        request = exchange.request
        if need.write and need.per_choice is not None:
            # after a degrade: the field depends on the serving provider
            request.write_output_cap(need.per_choice, exchange.resolved.release.base_url)
        if need.fitted:
            exchange.response_headers[FITTED_HEADER] = str(need.per_choice)
        # A stream must end with usage to be settled on it; the agent sees it only if it asked.
        strip_usage = exchange.stream and not request.ask_stream_usage()
        self._soft_header(exchange, meters)
        return Settle(
            self.ledger,
            reservation,
            need.prompt,
            cap=need.completion,
            stream=exchange.stream,
            strip_usage=strip_usage,
            metrics=self.metrics,
            price=price,
            release=exchange.resolved.release.name,
            on_settled=self.queue.pump,
        )

    @staticmethod
    def _take(granted: Granted, meters: list[Meter], need: Need) -> tuple[Reservation, Need] | None:
        """The reservation the queue made for this request and the need it stands for, grown
        to the need ``open`` computes (a prompt may have been rendered into the request since);
        None to admit afresh (its budgets changed, or the growth does not fit)."""
        if [m.id for m in granted.meters] != [m.id for m in meters]:
            return None
        if granted.need.fitted and granted.need.per_choice is not None:
            need = need.capped(min(granted.need.per_choice, need.per_choice or 0))
        more_tokens = max(0, need.tokens - granted.need.tokens)
        more_micros = max(0, need.micros - granted.need.micros)
        if (more_tokens or more_micros) and not Ledger.grow(
            granted.reservation, meters, more_tokens, more_micros
        ):
            return None
        return granted.reservation, need

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
        need: Need,
        now: float,
        why: tuple[str, str],  # (spent | could_not_wait, what kept it from waiting)
    ) -> tuple[Reservation, Price | None, Need]:
        snapshot = self.config.current
        first = refusals[0]
        target_name = first.meter.budget.degrade_to
        target = snapshot.releases.get(target_name) if snapshot and target_name else None
        degradable = all(r.meter.budget.degrade_to == target_name for r in refusals)
        # A cheaper release of another provider kind cannot read this request: refuse instead.
        foreign = target is not None and target.provider != exchange.dialect.provider_api
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
            raise self._refuse(refusals, *why)
        degrading = {r.scope for r in refusals}
        rest = [m for m in meters if m.scope not in degrading]
        request = exchange.request
        model = request.model
        # the prompt is estimated for the model that serves it
        request.set_model(target.model_for(exchange.operation))
        try:
            price = self._price(target, rest)  # the cheaper release's own price
            prompt = request.prompt_estimate(self.options.estimator)
            need = dataclasses.replace(need, prompt=prompt, price=price)
            reservation, more = self.ledger.admit(rest, need.tokens, now, micros=need.micros)
            if reservation is None:
                raise self._refuse(more, SPENT, "")
        except SidecarError:
            request.set_model(model)
            raise
        for r in refusals:
            r.meter.tally.degraded += 1
        exchange.resolved = dataclasses.replace(exchange.resolved, release=target)
        exchange.response_headers[DEGRADED_HEADER] = first.scope
        log.info("budget_degraded", scope=first.scope, release=target.name)
        return reservation, price, need

    def _refuse(self, refusals: list[Refusal], reason: str, why: str) -> SidecarError:
        refusal = refusals[0]
        err: SidecarError
        if reason == COULD_NOT_WAIT:
            for r in refusals:
                r.meter.tally.refused_wait += 1
            err = BudgetBusy(refusal.busy_message(why), param=refusal.scope)
            err.headers["Retry-After"] = "1"
        else:
            err = BudgetExhausted(refusal.message(), param=refusal.scope)
            err.headers["Retry-After"] = str(refusal.retry_after)
        err.headers[REFUSAL_HEADER] = reason
        self.metrics.refused(reason)
        log.info("budget_refused", scope=refusal.scope, need=refusal.need, reason=reason)
        return err

    @staticmethod
    def _soft_header(exchange: Exchange, meters: list[Meter]) -> None:
        warned = [m for m in meters if m.remaining <= m.limit * (1.0 - m.budget.soft)]
        if warned:
            tightest = min(warned, key=lambda m: m.remaining / m.limit)
            left = f"{usd(tightest.remaining)} USD" if tightest.cost else str(tightest.remaining)
            exchange.response_headers[REMAINING_HEADER] = f"{left}; scope={tightest.scope}"


def _body_size(exchange: Exchange) -> int:
    """Bytes of the request body a waiting request holds (what the queue's memory bound
    counts): its Content-Length, else its JSON re-encoded."""
    length = exchange.headers.get("Content-Length", "")
    if length.isdigit():
        return int(length)
    return len(orjson.dumps(exchange.body))


def estimator(name: str) -> Estimator:
    """The ``--budget-prompt-estimator`` setting as the dialects name it."""
    if name == "chars":
        return "chars"
    return "bytes" if name == "bytes" else "tokens"
