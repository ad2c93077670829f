"""How the budget controller slices a fleet-wide budget among live sidecars. Pure.

Safety rests on three rules, each checkable from one tick's inputs:

1. grants only grow within a window (a holder may already have admitted up to its grant);
2. a holder's claim is ``grant - returned``, where ``returned`` (read from its spend report,
   possibly stale, hence never more than the truth) is what it promised never to use;
3. new grants keep ``sum(claims) <= limit``.

A sidecar admits only while ``used + request <= grant - returned``, so the fleet's admitted
worst cases never add up to more than the limit, whoever crashes or loses etcd: a holder gone
without a final report keeps its claim -- grant minus the most it was seen giving back --
until the window ends (what it had not given back is lost for the window, never re-issued);
one that left with a final report keeps exactly what it used (configsvc.budgets.quota_view).
Liveness only decides who may *grow*: a holder without a spend key gets nothing new.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

MIN_TOP_UP: Final = 1


@dataclass(frozen=True, slots=True)
class Holder:
    grant: int = 0
    used: int = 0  # settled + reserved, from its spend report for this window
    returned: int = 0
    live: bool = False
    want: int = 0  # the largest request it refused (or has waiting) since its last report
    queued: int = 0  # what the requests waiting for room on it need, together (0: none wait)
    reserved: int = 0  # what it has reserved in flight (part of ``used``)

    @property
    def claim(self) -> int:
        return max(0, self.grant - self.returned)


def claimed(holders: Mapping[str, Holder]) -> int:
    return sum(h.claim for h in holders.values())


def fleet_used(holders: Mapping[str, Holder]) -> int:
    """What the fleet may have used: reports of live holders, whole claims of dead ones."""
    return sum(h.used if h.live else max(h.used, h.claim) for h in holders.values())


def share(limit: int, holders: Mapping[str, Holder]) -> int:
    """An equal part of what is left for each live holder (published so that holders with
    far more headroom than that give the excess back)."""
    live = sum(1 for h in holders.values() if h.live)
    return max(0, limit - fleet_used(holders)) // live if live else 0


def plan(limit: int, holders: Mapping[str, Holder]) -> dict[str, int]:
    """New grants: every live holder topped up toward an equal share of what is left.

    The share is ``(limit - fleet used) / live holders``, or more for a holder that had to
    refuse a larger request; holders with the least headroom are topped up first, never
    beyond the unclaimed part of the limit, and by at most ``unclaimed / (live + 1)`` each per
    tick, so that a sidecar that joins a moment later still finds something to take.

    While requests wait for room somewhere (``queued``), slices follow that demand instead:
    only holders with waiting requests are topped up, each toward what its waiting requests
    need (at least its share), the one closest to serving the request at its head (``want``)
    first, and only by enough to serve it: a scrap that serves nobody is left free for the
    next tick, when idle holders (sidecar.budgets.keeper) will have given theirs back too.
    """
    if any(h.live and h.queued for h in holders.values()):
        return _plan_for_demand(limit, holders)
    grants = {name: h.grant for name, h in holders.items()}
    live = [name for name, h in holders.items() if h.live]
    if not live:
        return grants
    free = limit - claimed(holders)
    fair = share(limit, holders)
    step = max(MIN_TOP_UP, free // (len(live) + 1))
    by_headroom = sorted(live, key=lambda n: (holders[n].claim - holders[n].used, n))
    for name in by_headroom:
        if free < MIN_TOP_UP:
            break
        h = holders[name]
        headroom = h.claim - h.used
        top_up = min(free, max(fair, h.want) - headroom, max(step, h.want))
        if top_up >= MIN_TOP_UP:
            grants[name] = h.grant + top_up
            free -= top_up
    return grants


def _plan_for_demand(limit: int, holders: Mapping[str, Holder]) -> dict[str, int]:
    grants = {name: h.grant for name, h in holders.items()}
    free = limit - claimed(holders)
    fair = share(limit, holders)

    def shortfall(name: str) -> int:
        h = holders[name]
        return h.want - (h.claim - h.used)

    waiting = [name for name, h in holders.items() if h.live and h.queued]
    for name in sorted(waiting, key=lambda n: (shortfall(n), n)):
        h = holders[name]
        if free < max(MIN_TOP_UP, shortfall(name)):
            continue  # not enough to serve its head: keep it for one that can use it
        top_up = min(free, max(fair, h.want, h.queued) - (h.claim - h.used))
        if top_up >= MIN_TOP_UP:
            grants[name] = h.grant + top_up
            free -= top_up
    return grants
