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

Holders that leave (both kinds of window):

* with a *final* report (a graceful shutdown: it gave back all it had not used and admits
  nothing more), its claim is exactly its ``used``; its own entries go and that amount joins
  the ``DEPARTED`` grant, which at an epoch turn becomes a tail of its own like any other;
* without one (a crash, or a sidecar cut off from etcd that may still be admitting from its
  slice), it counts its grant minus the most it was *seen* giving back (``Quotas.reported``,
  kept by the controller because the report itself is gone): its last reported use plus, at
  most, the part of its slice it could still spend unreported.

So a holder's claim is never counted at more than ``grant - returned``, and never at less than
what it may have admitted: the overspend bound (0 tokens admitted beyond the limit) holds, and
a restart no longer strands what the old process had given back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from configsvc.budgets.quota_plan import Holder, fleet_used, plan, share
from holdfast.budgets.window import Span, is_rolling, span_at
from holdfast.keyspace import Keyspace, RecordError
from holdfast.keyspace.budget import Budget
from holdfast.keyspace.keys import KeyError_
from holdfast.keyspace.quota import DEPARTED, Quotas, SpendReport
from holdfast.logs import get_logger
from holdfast.store import KeyValue

log = get_logger(__name__)

TAIL_EPOCHS: Final = 4


def spend_report(keyspace: Keyspace, kv: KeyValue) -> SpendReport | None:
    """The report stored at ``spend/<holder>/<scope>``, or None when it is unreadable or claims
    another holder or scope than its key: etcd roles guard keys, not values, so the key is
    what a sidecar could not forge."""
    try:
        parts = keyspace.parse(kv.key).parts
        report = SpendReport.decode(kv.value)
    except (KeyError_, RecordError):
        return None
    if (report.holder, report.scope) != parts:
        log.warning("spend_report_mismatched", key=kv.key, holder=report.holder)
        return None
    return report


@dataclass(frozen=True, slots=True)
class FleetView:
    span: Span
    holders: dict[str, Holder]
    tails: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def tail_tokens(self) -> int:
        return sum(claim for claim, _ in self.tails.values())

    @property
    def departed(self) -> int:
        """What holders that left with a final report used in this window or epoch."""
        gone = self.holders.get(DEPARTED)
        return gone.grant if gone is not None else 0

    def used(self) -> int:
        """What the fleet may have used in the (live) window."""
        return fleet_used(self.holders) + self.tail_tokens

    def plan(self, limit: int) -> dict[str, int]:
        return plan(max(0, limit - self.tail_tokens), self.holders)

    def share(self, limit: int) -> int:
        return share(max(0, limit - self.tail_tokens), self.holders)

    def reserved(self) -> int:
        """What live holders have reserved in flight (``used - reserved`` is then a lower
        bound of what the fleet settled)."""
        return sum(h.reserved for h in self.holders.values() if h.live)

    def demand(self) -> dict[str, int]:
        """Live holders whose requests wait for room, and what those need."""
        return {n: h.queued for n, h in sorted(self.holders.items()) if h.live and h.queued}

    def reported(self) -> dict[str, tuple[int, int]]:
        """What to remember of each holder's report, for when the report is gone."""
        return {
            name: (h.used, h.returned)
            for name, h in self.holders.items()
            if name != DEPARTED and h.grant
        }


def _holders(
    grants: Mapping[str, int],
    reported: Mapping[str, tuple[int, int]],
    reports: list[SpendReport],
    window: str,
    *,
    rolling: bool,
) -> dict[str, Holder]:
    """The holders of one window (calendar) or epoch (rolling) ``window``, departed folded."""
    latest = {r.holder: r for r in reports}
    departed = grants.get(DEPARTED, 0)
    holders: dict[str, Holder] = {}
    for name in (set(grants) | set(latest)) - {DEPARTED}:
        report = latest.get(name)
        seen_used, seen_returned = reported.get(name, (0, 0))
        current = report is not None and report.window == window
        grant = grants.get(name, 0)
        if report is not None and report.final:
            if grant:  # else folded at an earlier tick (or it never held a slice)
                departed += report.used if current or rolling else grant - seen_returned
            continue
        holders[name] = Holder(
            grant=grant,
            used=report.used if report is not None and (current or rolling) else seen_used,
            # only grows within a window: a report read earlier may be the fresher one
            returned=max(report.returned if current and report is not None else 0, seen_returned),
            live=report is not None,
            want=report.want if report is not None else 0,
            queued=report.queued if report is not None and (current or rolling) else 0,
            reserved=report.reserved if report is not None and (current or rolling) else 0,
        )
    if departed:
        holders[DEPARTED] = Holder(grant=departed, used=departed)
    return holders


def holders_of(quotas: Quotas | None, window: str, reports: list[SpendReport]) -> dict[str, Holder]:
    """Every holder of a calendar window: those with a grant, and live ones reporting."""
    same = quotas is not None and quotas.window == window
    grants = quotas.grants if quotas is not None and same else {}
    reported = quotas.reported if quotas is not None and same else {}
    return _holders(grants, reported, reports, window, rolling=False)


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
    start = previous if previous is not None else epoch
    until = start + TAIL_EPOCHS
    live = {r.holder: r for r in reports}
    grants: dict[str, int] = {}
    for name, grant in quotas.grants.items():
        report = live.get(name)
        _, seen = quotas.reported.get(name, (0, 0))
        returned = report.returned if report is not None and report.window == quotas.window else 0
        claim = max(0, grant - max(returned, seen))
        if report is not None and report.final:
            claim = report.used  # it admits nothing more: what its live window holds
        elif report is not None:
            grants[name] = claim
            continue
        if claim:  # gone: kept until what it may have admitted has aged out
            key = f"{DEPARTED}@{start}" if name == DEPARTED else name
            old, old_until = tails.get(key, (0, until))
            tails[key] = (old + claim, max(old_until, until))
    return grants, tails


def view(
    budget: Budget, quotas: Quotas | None, reports: list[SpendReport], now: float
) -> FleetView:
    span = span_at(budget.window, budget.zone, now)
    if not is_rolling(budget.window):
        return FleetView(span, holders_of(quotas, span.id, reports))
    grants, tails = carry(quotas, budget.window, span, reports)
    same = quotas is not None and quotas.window == span.id
    reported = quotas.reported if quotas is not None and same else {}
    return FleetView(span, _holders(grants, reported, reports, span.id, rolling=True), tails)
