"""Token accounting of one sidecar: check-and-reserve, settle, windows, fleet slices. Pure.

Every call here is synchronous and touches only memory, so an admission (check every scope,
then reserve on every scope) runs with no await in between: it is atomic with respect to every
other request of this sidecar, however many are in flight.

Invariant per scope: ``spent + reserved <= allowance`` after each admission, where the
allowance is the budget's limit for a local (session) scope, and the slice this sidecar holds
(``grant - returned``) for a fleet scope. ``spent`` is what was charged in the current calendar
window, or for a rolling window what was charged to admissions of its live sub-buckets
(holdfast.budget_rolling). Settling replaces a reservation by the real charge (in the bucket it
was admitted in), which is at most the reservation unless the prompt estimate was too low.

Fleet slices of a rolling window belong to an *epoch* (the window's length, epoch-aligned): a
grant stays usable while this sidecar's clock is within one epoch of it, and what was given
back starts from zero with each new epoch's grant (configsvc carried the remaining claim over).

A budget with a cost limit has a second meter, ``usd:<scope>``, counted in micro-dollars; an
admission reserves tokens on the token meters and micro-dollars on the cost meters in the same
synchronous step, and settling charges each meter in its own unit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from holdfast.budgets.rolling import retry_seconds
from holdfast.keyspace.budget import Budget, applies_to, meter_id
from sidecar.budgets.meter import Meter, Tally, epoch_of, new_tally

FLEET_RETRY_AFTER = 1  # a fleet slice that is short may be topped up at the next controller tick


@dataclass(frozen=True, slots=True)
class Refusal:
    meter: Meter
    need: int
    retry_after: int

    @property
    def scope(self) -> str:
        return self.meter.scope

    def message(self) -> str:
        return (
            f"{self._what()} is exhausted: {self._usage()}; this request needs up to "
            f"{self.meter.amount(self.need)}. Retry after {self.retry_after}s"
        )

    def busy_message(self, why: str) -> str:
        """The refusal of a request that could fit once reservations in flight settle (or a
        slice moves here), but that did not wait for it."""
        return (
            f"{self._what()} has no room for this request now: {self._usage()}; this request "
            f"needs up to {self.meter.amount(self.need)}, which fits once requests in flight "
            f"settle, but {why or 'it did not wait'}. Retry after 1s"
        )

    def _what(self) -> str:
        return f"{'cost' if self.meter.cost else 'token'} budget {self.meter.budget.scope}"

    def _usage(self) -> str:
        b, m = self.meter.budget, self.meter
        if b.fleet:
            spent = (
                f"{m.amount(max(m.fleet_used, m.used))} used fleet-wide, "
                f"this sidecar holds {m.amount(m.allowance)}"
            )
        else:
            spent = f"{m.amount(m.used)} used"
        kind = " (rolling)" if m.rolling else ""
        return (
            f"limit {m.amount(m.limit)}{'' if m.cost else ' tokens'} per {b.window}{kind}, {spent}"
        )


@dataclass(slots=True)
class Reservation:
    amount: int
    # (tally, admission bucket, reserved on it, whether it counts micro-dollars)
    tallies: list[tuple[Tally, int, int, bool]] = field(default_factory=list)
    settled: bool = False
    micros: int = 0


class Ledger:
    """The meters of the budgets that can apply to this sidecar's requests.

    With ``agent`` set, another agent's ``agent:`` budget is left out: no request of this
    sidecar is metered by it, so it must not hold a slice of it either (None: every budget,
    for tools that look at a whole environment)."""

    def __init__(self, *, agent: str | None = None) -> None:
        self.meters: dict[str, Meter] = {}
        self.agent = agent
        self._budgets: Mapping[str, object] | None = None

    def sync(self, budgets: Mapping[str, object], now: float) -> None:
        """Follow the configured budgets (cheap when the mapping is the same object as before)."""
        if budgets is self._budgets:
            return
        self._budgets = budgets
        wanted: set[str] = set()
        for budget in budgets.values():
            if not isinstance(budget, Budget) or not applies_to(budget.scope, self.agent):
                continue
            for key, unit, _ in budget.meters():
                wanted.add(key)
                meter = self.meters.get(key)
                if meter is None:
                    self.meters[key] = Meter(budget, new_tally(budget, now), unit=unit)
                elif meter.budget != budget:
                    same_window = (meter.budget.window, meter.budget.zone) == (
                        budget.window,
                        budget.zone,
                    )
                    meter.budget = budget
                    if not same_window:
                        meter.tally = new_tally(budget, now)
                        meter.returned = 0
        for key in [k for k in self.meters if k not in wanted]:
            del self.meters[key]

    def applicable(self, scopes: Iterable[str], now: float) -> list[Meter]:
        """The meters of these scopes: tokens, then cost, of each scope that has them."""
        found = []
        for scope in scopes:
            for key in (scope, meter_id(scope, "usd")):
                meter = self.meters.get(key)
                if meter is not None:
                    meter.rotate(now)
                    found.append(meter)
        return found

    def admit(
        self, meters: list[Meter], amount: int, now: float, *, micros: int = 0
    ) -> tuple[Reservation | None, list[Refusal]]:
        """Reserve ``amount`` tokens on every token meter and ``micros`` micro-dollars on every
        cost meter, or nothing anywhere and say which refused."""
        refusals = []
        for m in meters:
            need = micros if m.cost else amount
            if not m.fits(need):
                refusals.append(Refusal(m, need, self._retry_after(m, need, now)))
        if refusals:
            for r in refusals:
                r.meter.tally.refused += 1
                r.meter.tally.want = max(r.meter.tally.want, r.need)
            return None, refusals
        reservation = Reservation(amount, micros=micros)
        for m in meters:
            t = m.tally
            need = micros if m.cost else amount
            t.reserved += need
            t.reserved_total += need
            t.admitted += 1
            bucket = t.buckets.current if t.buckets is not None else 0
            reservation.tallies.append((t, bucket, need, m.cost))
        return reservation, []

    @staticmethod
    def _retry_after(meter: Meter, amount: int, now: float) -> int:
        b = meter.budget
        if b.fleet and max(meter.fleet_used, meter.used) + amount <= meter.limit:
            return FLEET_RETRY_AFTER  # the fleet has room: this sidecar's slice is just short
        buckets = meter.tally.buckets
        if buckets is None:
            return meter.tally.span.retry_after(now)
        # Rolling: until enough of this sidecar's own spend ages out to fit the request (for a
        # fleet scope the others' spend ages too: a hint, never later than the truth locally).
        need = meter.used + amount - (meter.allowance if b.fleet else meter.limit)
        wait = buckets.freed_after(need, now)
        return retry_seconds(buckets.width if wait is None else wait)

    @staticmethod
    def grow(reservation: Reservation, meters: list[Meter], tokens: int, micros: int) -> bool:
        """Reserve ``tokens`` / ``micros`` more under ``reservation`` (made on ``meters``, in
        that order), all or nothing: a request whose need grew after a reservation was made
        for it (a prompt rendered into it) keeps one reservation, settled once."""
        if reservation.settled or len(meters) != len(reservation.tallies):
            return False
        pairs = list(zip(meters, reservation.tallies, strict=True))
        if any(m.tally is not t for m, (t, *_) in pairs):
            return False  # a window turned in between: the caller admits afresh
        if not all(m.fits(micros if m.cost else tokens) for m in meters):
            return False
        grown = []
        for tally, bucket, reserved, cost in reservation.tallies:
            more = micros if cost else tokens
            tally.reserved += more
            tally.reserved_total += more
            grown.append((tally, bucket, reserved + more, cost))
        reservation.tallies = grown
        reservation.amount += tokens
        reservation.micros += micros
        return True

    @staticmethod
    def release(reservation: Reservation) -> None:
        """Undo a reservation whose request never went out (it was not admitted after all)."""
        if reservation.settled:
            return
        reservation.settled = True
        for tally, _, reserved, _ in reservation.tallies:
            tally.reserved -= reserved
            tally.admitted -= 1

    @staticmethod
    def settle(reservation: Reservation, charge: int, *, estimated: bool, micros: int = 0) -> None:
        """Replace the reservation by the real charge (``charge`` tokens, ``micros``
        micro-dollars on cost meters), once; later calls do nothing."""
        if reservation.settled:
            return
        reservation.settled = True
        for tally, bucket, reserved, cost in reservation.tallies:
            tally.reserved -= reserved
            amount = micros if cost else charge
            tally.charge(bucket, amount)
            if estimated:
                tally.estimated += amount

    def set_grant(
        self, scope: str, window: str, grant: int, fleet_used: int, fleet_settled: int = 0
    ) -> None:
        meter = self.meters.get(scope)
        if meter is not None:
            if meter.rolling and window != meter.grant_window:
                # a new epoch's grant already left out what was given back before it
                meter.returned = 0
                meter.grant_epoch = epoch_of(window)
            meter.grant, meter.grant_window, meter.fleet_used = grant, window, fleet_used
            meter.fleet_settled = fleet_settled
