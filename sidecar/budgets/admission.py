"""Whether a request fits its budgets now, can fit by waiting, or cannot fit at all. Pure.

A request's *need* is its worst case: the prompt estimate plus its output cap times its choices,
in tokens on every token meter and, priced, in micro-dollars on every cost meter.

* **fits now** -- every meter has ``used + need <= allowance`` (the atomic check the ledger
  makes when it reserves);
* **can fit later** -- it does not fit now, but on every meter that is short, what cannot go
  away leaves room for it: for a local (session) scope the settled spend (reservations in
  flight may settle at 0), for a fleet scope this sidecar's own settled spend within its slice,
  or -- while the budget controller can move slices (``slices_live``) -- the fleet's settled
  spend as of the controller's last tick (a lower bound: settled spend only grows within a
  window) within the limit. Waiting for settlements or a bigger slice can help;
* **cannot fit** -- on some meter even that leaves no room: the budget is spent, and waiting
  cannot help.

A budget with ``fit_cap`` adds one step before refusing: a request whose worst case cannot fit
any more is admitted with its output cap lowered to what is left (at least ``fit_cap`` per
choice), the lower cap written into the request so that the provider cannot exceed it. The need
it is admitted with is still reserved whole, so nothing here can admit beyond a limit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from holdfast.keyspace.price import Price
from sidecar.budgets.meter import Meter


@dataclass(frozen=True, slots=True)
class Need:
    """A request's worst case, as the budget filter computed it."""

    prompt: int  # the prompt estimate, tokens
    per_choice: int | None  # the output cap each choice carries (None: no cap, e.g. embeddings)
    choices: int = 1
    price: Price | None = None  # when a cost meter applies
    write: bool = False  # the filter writes ``per_choice`` into the request (none sent, or fitted)
    fitted: bool = False  # ``per_choice`` was lowered to what is left (``Budget.fit_cap``)

    @property
    def completion(self) -> int:
        return (self.per_choice or 0) * self.choices

    @property
    def tokens(self) -> int:
        return self.prompt + self.completion

    @property
    def micros(self) -> int:
        return self.price.micros(self.prompt, self.completion) if self.price is not None else 0

    def on(self, meter: Meter) -> int:
        """What this need takes on ``meter``, in its unit."""
        return self.micros if meter.cost else self.tokens

    def capped(self, per_choice: int) -> Need:
        return replace(self, per_choice=per_choice, write=True, fitted=True)


@dataclass(frozen=True, slots=True)
class Admit:
    need: Need  # what to reserve: the request's need, or a fitted one (a lower cap)


@dataclass(frozen=True, slots=True)
class Wait:
    meter: Meter  # the first meter that is short now
    need: Need  # what it waits for room for: its own need, or the smallest fitted one


@dataclass(frozen=True, slots=True)
class Refuse:
    meter: Meter  # the first meter on which waiting cannot help
    need: int  # what the request needs on it


Decision = Admit | Wait | Refuse


def can_fit_later(meter: Meter, amount: int, *, slices_live: bool) -> bool:
    """Whether ``amount`` could fit ``meter`` once reservations in flight settle (at 0) and,
    for a fleet scope, the controller moves slices. False means: the budget is spent."""
    spent = meter.tally.spent
    if not meter.budget.fleet:
        return spent + amount <= meter.limit
    if spent + amount <= meter.allowance:
        return True  # this sidecar's own settlements make room in the slice it holds
    return slices_live and max(spent, meter.fleet_floor) + amount <= meter.limit


def _short(meters: Sequence[Meter], need: Need) -> Meter | None:
    return next((m for m in meters if not m.fits(need.on(m))), None)


def _spent(meters: Sequence[Meter], need: Need, slices_live: bool) -> Meter | None:
    return next(
        (m for m in meters if not can_fit_later(m, need.on(m), slices_live=slices_live)), None
    )


def decide(meters: Sequence[Meter], need: Need, *, slices_live: bool) -> Decision:
    """Admit now, wait, or refuse -- for the request's own need, then for a fitted one."""
    short = _short(meters, need)
    if short is None:
        return Admit(need)
    spent = _spent(meters, need, slices_live)
    if spent is None:
        return Wait(short, need)
    floor, refusing = _fit_floor(meters, need, slices_live)
    if floor is None:
        refusing = refusing or spent
        return Refuse(refusing, need.on(refusing))
    best = largest_cap(meters, need, low=floor)
    if best is not None:
        return Admit(need.capped(best))
    return Wait(_short(meters, need.capped(floor)) or short, need.capped(floor))


def _fit_floor(
    meters: Sequence[Meter], need: Need, slices_live: bool
) -> tuple[int | None, Meter | None]:
    """The smallest per-choice cap a fitted admission may carry, when the budgets that cannot
    cover the full need all allow fitting and that cap could fit; else None, and the meter on
    which even that cannot fit (None: fitting is not allowed)."""
    if need.per_choice is None:
        return None, None
    binding = [m for m in meters if not can_fit_later(m, need.on(m), slices_live=slices_live)]
    if not binding or any(m.budget.fit_cap <= 0 for m in binding):
        return None, None
    floor = max(m.budget.fit_cap for m in binding)
    if floor >= need.per_choice:
        return None, None  # nothing to lower
    spent = _spent(meters, need.capped(floor), slices_live)
    if spent is not None:
        return None, spent
    return floor, None


def largest_cap(meters: Sequence[Meter], need: Need, *, low: int) -> int | None:
    """The largest per-choice cap in ``[low, need.per_choice]`` with which the request fits
    every meter now; None when even ``low`` does not."""
    high = need.per_choice or 0
    if low > high or _short(meters, need.capped(low)) is not None:
        return None
    # Token meters bound the cap directly; cost meters are monotone in it: bisect.
    for m in meters:
        if not m.cost:
            high = min(high, (m.allowance - m.used - need.prompt) // need.choices)
    while low < high:
        mid = (low + high + 1) // 2
        if _short(meters, need.capped(mid)) is None:
            low = mid
        else:
            high = mid - 1
    return low
