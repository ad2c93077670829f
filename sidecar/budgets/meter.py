"""One budget scope as this sidecar sees it: what its window holds, and what it may still use.

A Tally counts one window occurrence (a calendar span, or a rolling window's sub-buckets); a
Meter pairs it with the budget and, for a fleet scope, the slice the controller granted. Pure
and synchronous, so the ledger (sidecar.budget_ledger) can admit across meters atomically.
"""

from __future__ import annotations

from dataclasses import dataclass

from holdfast.budgets.rolling import Buckets
from holdfast.budgets.window import Span, duration_seconds, span_at
from holdfast.keyspace.budget import Budget, meter_id
from holdfast.keyspace.price import usd


@dataclass(slots=True)
class Tally:
    """One scope in one window occurrence."""

    span: Span
    spent: int = 0
    reserved: int = 0
    estimated: int = 0  # part of ``spent`` charged from estimates (no usage from the provider)
    admitted: int = 0
    refused: int = 0
    refused_wait: int = 0  # part of ``refused``: could have fit by waiting, but did not wait
    degraded: int = 0
    want: int = 0  # the largest need refused since the last spend report
    reserved_total: int = 0  # every reservation made in this window, added up (a rate's base)
    waits: int = 0  # requests that waited for room in this window (however the wait ended)
    wait_ms: int = 0  # their waits, added up
    wait_max_ms: int = 0
    buckets: Buckets | None = None  # rolling windows: spend per sub-bucket

    def waited(self, ms: int) -> None:
        self.waits += 1
        self.wait_ms += ms
        self.wait_max_ms = max(self.wait_max_ms, ms)

    def charge(self, bucket: int, amount: int) -> None:
        if self.buckets is None:
            self.spent += amount
        else:
            self.buckets.add(bucket, amount)
            self.spent = self.buckets.total


def new_tally(budget: Budget, now: float) -> Tally:
    tally = Tally(span_at(budget.window, budget.zone, now))
    seconds = duration_seconds(budget.window)
    if seconds is not None:
        tally.buckets = Buckets.for_window(seconds)
        tally.buckets.advance(now)
    return tally


def epoch_of(window_id: str) -> int | None:
    """The epoch index of a rolling window's span id (``1h@123`` -> 123)."""
    _, sep, index = window_id.rpartition("@")
    return int(index) if sep and index.lstrip("-").isdigit() else None


@dataclass(slots=True)
class Meter:
    budget: Budget
    tally: Tally
    grant: int = 0  # fleet scopes: tokens handed to this sidecar for ``grant_window``
    grant_window: str = ""
    returned: int = 0  # fleet scopes: tokens of the grant given back in this window
    fleet_used: int = 0  # fleet scopes: the fleet's use as of the controller's last tick
    fleet_settled: int = 0  # fleet scopes: a lower bound of the fleet's settled spend (same)
    grant_epoch: int | None = None  # rolling fleet scopes: the epoch of ``grant_window``
    unit: str = "tokens"  # or "usd": amounts in micro-dollars

    @property
    def scope(self) -> str:
        return self.budget.scope

    @property
    def id(self) -> str:
        """The ledger's key of this meter: the scope, or ``usd:<scope>``."""
        return meter_id(self.budget.scope, self.unit)

    @property
    def cost(self) -> bool:
        return self.unit == "usd"

    @property
    def limit(self) -> int:
        return self.budget.cost if self.unit == "usd" else self.budget.tokens

    def amount(self, value: int) -> str:
        """An amount of this meter's unit, for messages (tokens: the bare number)."""
        return f"{usd(value)} USD" if self.cost else str(value)

    @property
    def allowance(self) -> int:
        if not self.budget.fleet:
            return self.limit
        if not self._grant_current():
            return 0  # rolling: a slice is usable within one epoch of its own (skew, slow ticks)
        return max(0, self.grant - self.returned)

    @property
    def sliced(self) -> bool:
        """Fleet scopes: whether this sidecar was granted a slice of this window (it may have
        given all of it back since)."""
        return self._grant_current() and self.grant > 0

    @property
    def fleet_floor(self) -> int:
        """Fleet scopes: what the fleet has surely settled in this window, as of the last slice
        update (0 when that update belongs to another window)."""
        if not self.budget.fleet or not self._grant_current():
            return 0
        return max(self.tally.spent, self.fleet_settled)

    def _grant_current(self) -> bool:
        if self.tally.buckets is None:
            return self.grant_window == self.tally.span.id
        return self.grant_epoch is not None and abs(self.grant_epoch - self._epoch()) <= 1

    def _epoch(self) -> int:
        span = self.tally.span
        return round(span.start / (span.end - span.start))

    @property
    def used(self) -> int:
        return self.tally.spent + self.tally.reserved

    @property
    def remaining(self) -> int:
        """Tokens left in the scope: locally exact, fleet-wide as of the controller's last tick."""
        if not self.budget.fleet:
            return max(0, self.limit - self.used)
        return max(0, self.limit - max(self.fleet_used, self.used))

    def fits(self, amount: int) -> bool:
        return self.used + amount <= self.allowance

    @property
    def rolling(self) -> bool:
        return self.tally.buckets is not None

    def rotate(self, now: float) -> None:
        tally = self.tally
        if tally.buckets is not None:
            tally.spent = tally.buckets.advance(now)
            if not tally.span.start <= now < tally.span.end:  # a new epoch: nothing resets
                tally.span = span_at(self.budget.window, self.budget.zone, now)
            return
        if tally.span.start <= now < tally.span.end:
            return  # the common case: no calendar arithmetic on the request path
        span = span_at(self.budget.window, self.budget.zone, now)
        if span.id != self.tally.span.id:
            self.tally = Tally(span)
            self.returned = 0
            self.fleet_used = 0
            self.fleet_settled = 0

    def give_back(self, keep: int) -> int:
        """Return the headroom above ``keep`` (fleet scopes); how many tokens were given back."""
        headroom = self.allowance - self.used
        back = headroom - keep
        if not self.budget.fleet or back <= 0:
            return 0
        self.returned += back
        return back
