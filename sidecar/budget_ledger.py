"""Token accounting of one sidecar: check-and-reserve, settle, windows, fleet slices. Pure.

Every call here is synchronous and touches only memory, so an admission (check every scope,
then reserve on every scope) runs with no await in between: it is atomic with respect to every
other request of this sidecar, however many are in flight.

Invariant per scope and window: ``spent + reserved <= allowance`` after each admission, where
the allowance is the budget's limit for a local (session) scope, and the slice this sidecar
holds (``grant - returned``) for a fleet scope. Settling replaces a reservation by the real
charge, which is at most the reservation unless the prompt estimate was too low.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from holdfast.budget_window import Span, span_at
from holdfast.keyspace.budget import Budget

FLEET_RETRY_AFTER = 1  # a fleet slice that is short may be topped up at the next controller tick


@dataclass(slots=True)
class Tally:
    """One scope in one window occurrence."""

    span: Span
    spent: int = 0
    reserved: int = 0
    estimated: int = 0  # part of ``spent`` charged from estimates (no usage from the provider)
    admitted: int = 0
    refused: int = 0
    degraded: int = 0
    want: int = 0  # the largest need refused since the last spend report


@dataclass(slots=True)
class Meter:
    budget: Budget
    tally: Tally
    grant: int = 0  # fleet scopes: tokens handed to this sidecar for ``grant_window``
    grant_window: str = ""
    returned: int = 0  # fleet scopes: tokens of the grant given back in this window
    fleet_used: int = 0  # fleet scopes: the fleet's use as of the controller's last tick

    @property
    def scope(self) -> str:
        return self.budget.scope

    @property
    def allowance(self) -> int:
        if not self.budget.fleet:
            return self.budget.tokens
        if self.grant_window != self.tally.span.id:
            return 0
        return max(0, self.grant - self.returned)

    @property
    def used(self) -> int:
        return self.tally.spent + self.tally.reserved

    @property
    def remaining(self) -> int:
        """Tokens left in the scope: locally exact, fleet-wide as of the controller's last tick."""
        if not self.budget.fleet:
            return max(0, self.budget.tokens - self.used)
        return max(0, self.budget.tokens - max(self.fleet_used, self.used))

    def fits(self, amount: int) -> bool:
        return self.used + amount <= self.allowance

    def rotate(self, now: float) -> None:
        if self.tally.span.start <= now < self.tally.span.end:
            return  # the common case: no calendar arithmetic on the request path
        span = span_at(self.budget.window, self.budget.zone, now)
        if span.id != self.tally.span.id:
            self.tally = Tally(span)
            self.returned = 0
            self.fleet_used = 0

    def give_back(self, keep: int) -> int:
        """Return the headroom above ``keep`` (fleet scopes); how many tokens were given back."""
        headroom = self.allowance - self.used
        back = headroom - keep
        if not self.budget.fleet or back <= 0:
            return 0
        self.returned += back
        return back


@dataclass(frozen=True, slots=True)
class Refusal:
    meter: Meter
    need: int
    retry_after: int

    @property
    def scope(self) -> str:
        return self.meter.scope

    def message(self) -> str:
        b, m = self.meter.budget, self.meter
        if b.fleet:
            spent = f"{max(m.fleet_used, m.used)} used fleet-wide, this sidecar holds {m.allowance}"
        else:
            spent = f"{m.used} used"
        return (
            f"token budget {b.scope} is exhausted: limit {b.tokens} tokens per {b.window}, "
            f"{spent}; this request needs up to {self.need}. Retry after {self.retry_after}s"
        )


@dataclass(slots=True)
class Reservation:
    amount: int
    tallies: list[Tally] = field(default_factory=list)
    settled: bool = False


class Ledger:
    def __init__(self) -> None:
        self.meters: dict[str, Meter] = {}
        self._budgets: Mapping[str, object] | None = None

    def sync(self, budgets: Mapping[str, object], now: float) -> None:
        """Follow the configured budgets (cheap when the mapping is the same object as before)."""
        if budgets is self._budgets:
            return
        self._budgets = budgets
        for scope, budget in budgets.items():
            if not isinstance(budget, Budget):
                continue
            meter = self.meters.get(scope)
            if meter is None:
                span = span_at(budget.window, budget.zone, now)
                self.meters[scope] = Meter(budget, Tally(span))
            elif meter.budget != budget:
                same_window = (meter.budget.window, meter.budget.zone) == (
                    budget.window,
                    budget.zone,
                )
                meter.budget = budget
                if not same_window:
                    meter.tally = Tally(span_at(budget.window, budget.zone, now))
                    meter.returned = 0
        for scope in [s for s in self.meters if s not in budgets]:
            del self.meters[scope]

    def applicable(self, scopes: Iterable[str], now: float) -> list[Meter]:
        found = []
        for scope in scopes:
            meter = self.meters.get(scope)
            if meter is not None:
                meter.rotate(now)
                found.append(meter)
        return found

    def admit(
        self, meters: list[Meter], amount: int, now: float
    ) -> tuple[Reservation | None, list[Refusal]]:
        """Reserve ``amount`` on every meter, or on none and say which refused."""
        refusals = [
            Refusal(m, amount, self._retry_after(m, amount, now))
            for m in meters
            if not m.fits(amount)
        ]
        if refusals:
            for r in refusals:
                r.meter.tally.refused += 1
                r.meter.tally.want = max(r.meter.tally.want, amount)
            return None, refusals
        reservation = Reservation(amount)
        for m in meters:
            m.tally.reserved += amount
            m.tally.admitted += 1
            reservation.tallies.append(m.tally)
        return reservation, []

    @staticmethod
    def _retry_after(meter: Meter, amount: int, now: float) -> int:
        b = meter.budget
        if b.fleet and max(meter.fleet_used, meter.used) + amount <= b.tokens:
            return FLEET_RETRY_AFTER  # the fleet has room: this sidecar's slice is just short
        return meter.tally.span.retry_after(now)

    @staticmethod
    def settle(reservation: Reservation, charge: int, *, estimated: bool) -> None:
        """Replace the reservation by the real charge, once; later calls do nothing."""
        if reservation.settled:
            return
        reservation.settled = True
        for tally in reservation.tallies:
            tally.reserved -= reservation.amount
            tally.spent += charge
            if estimated:
                tally.estimated += charge

    def set_grant(self, scope: str, window: str, grant: int, fleet_used: int) -> None:
        meter = self.meters.get(scope)
        if meter is not None:
            meter.grant, meter.grant_window, meter.fleet_used = grant, window, fleet_used
