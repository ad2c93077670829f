"""Who holds what of a fleet-wide budget right now, for the controller and for ``usage``. Pure.

Calendar windows: grants, use and what was given back all belong to the window occurrence; a
new occurrence starts from nothing.

Rolling windows: spend does not reset, it ages out sub-bucket by sub-bucket, so a holder's
``used`` (its live window) counts whatever epoch its report names. Slices belong to an epoch
(one window length, epoch-aligned): at an epoch turn the controller carries each live holder's
claim (``grant - returned``, with ``returned`` from a report of that epoch, so never more than
the truth) over as its new grant, and the holder, when it sees the new epoch, starts counting
``returned`` from zero -- this only keeps the counters small. A holder gone at the turn gets
no grant in the new epoch; its claim becomes a *tail* kept against the limit for
``TAIL_EPOCHS`` more epochs: it may go on admitting from its old slice for at most one epoch
(a sidecar's slice is usable within one epoch of its own) and what it admitted ages out one
window length plus a sub-bucket later, with one epoch to spare for clock skew.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from configsvc.quota_plan import Holder, fleet_used, plan, share
from holdfast.budget_window import Span, is_rolling, span_at
from holdfast.keyspace.budget import Budget, Quotas, SpendReport

TAIL_EPOCHS: Final = 4


@dataclass(frozen=True, slots=True)
class FleetView:
    span: Span
    holders: dict[str, Holder]
    tails: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def tail_tokens(self) -> int:
        return sum(claim for claim, _ in self.tails.values())

    def used(self) -> int:
        """What the fleet may have used in the (live) window."""
        return fleet_used(self.holders) + self.tail_tokens

    def plan(self, limit: int) -> dict[str, int]:
        return plan(max(0, limit - self.tail_tokens), self.holders)

    def share(self, limit: int) -> int:
        return share(max(0, limit - self.tail_tokens), self.holders)


def holders_of(quotas: Quotas | None, window: str, reports: list[SpendReport]) -> dict[str, Holder]:
    """Every holder of a calendar window: those with a grant, and live ones reporting."""
    grants = dict(quotas.grants) if quotas is not None and quotas.window == window else {}
    live = {r.holder: r for r in reports}
    holders: dict[str, Holder] = {}
    for name in set(grants) | set(live):
        report = live.get(name)
        same = report is not None and report.window == window
        holders[name] = Holder(
            grant=grants.get(name, 0),
            used=report.used if report is not None and same else 0,
            returned=report.returned if report is not None and same else 0,
            live=report is not None,
            want=report.want if report is not None else 0,
        )
    return holders


def _epoch(window_id: str, window: str) -> int | None:
    prefix, sep, index = window_id.rpartition("@")
    if sep and prefix == window and index.lstrip("-").isdigit():
        return int(index)
    return None


def carry(
    quotas: Quotas | None, window: str, span: Span, reports: list[SpendReport]
) -> tuple[dict[str, int], dict[str, tuple[int, int]]]:
    """Grants and tails of a rolling budget for the epoch ``span`` (``window`` like ``1h``)."""
    if quotas is None:
        return {}, {}
    epoch = _epoch(span.id, window)
    assert epoch is not None  # span ids of duration windows always carry their index
    tails = {h: (c, until) for h, (c, until) in quotas.tails.items() if until >= epoch}
    if quotas.window == span.id:
        return dict(quotas.grants), tails
    previous = _epoch(quotas.window, window)
    until = (previous if previous is not None else epoch) + TAIL_EPOCHS
    live = {r.holder: r for r in reports}
    grants: dict[str, int] = {}
    for name, grant in quotas.grants.items():
        report = live.get(name)
        returned = report.returned if report is not None and report.window == quotas.window else 0
        claim = max(0, grant - returned)
        if report is not None:
            grants[name] = claim
        elif claim:
            old, old_until = tails.get(name, (0, until))
            tails[name] = (old + claim, max(old_until, until))
    return grants, tails


def view(
    budget: Budget, quotas: Quotas | None, reports: list[SpendReport], now: float
) -> FleetView:
    span = span_at(budget.window, budget.zone, now)
    if not is_rolling(budget.window):
        return FleetView(span, holders_of(quotas, span.id, reports))
    grants, tails = carry(quotas, budget.window, span, reports)
    live = {r.holder: r for r in reports}
    holders: dict[str, Holder] = {}
    for name in set(grants) | set(live):
        report = live.get(name)
        holders[name] = Holder(
            grant=grants.get(name, 0),
            used=report.used if report is not None else 0,  # the live window, any epoch
            returned=report.returned if report is not None and report.window == span.id else 0,
            live=report is not None,
            want=report.want if report is not None else 0,
        )
    return FleetView(span, holders, tails)
