"""The budget controller: on the elected leader only, slices every fleet-wide budget.

Each tick reads ``budgets/``, ``quotas/`` and ``spend/`` and rewrites ``quotas/<scope>`` (one key
per scope, compare-and-swap on its mod revision) with the grants ``quota_plan.plan`` gives, and
what it read of each holder's report (so a holder whose report vanished still counts what it
had given back; holders that left with a final report are folded into one entry). The
CAS makes a tick by a deposed leader fail instead of double-granting; a window that turned
starts from empty grants, and an epoch turn of a rolling window carries the claims over
(configsvc.budgets.quota_view). Quota records of deleted budgets are removed.

A budget with both limits is two meters, sliced independently: ``quotas/<scope>`` in tokens and
``quotas/usd:<scope>`` in micro-dollars (``Budget.meters``).

Sidecars do not watch ``quotas/``: each agent's part of a record (its own holders' grants and
demand, the other agents' holders folded into one ``OTHERS`` entry, and the fleet's figures:
``holdfast.keyspace.quota.agent_part``) is written to ``slices/<agent>/<scope>``, which only that
agent's sidecars watch, so a sidecar never receives the grants of every other holder at every
tick. Slices follow demand through it: a holder whose requests wait is topped up in its own
agent's part (which wakes it), and an idle holder of another agent sees ``OTHERS`` wanting room
and gives its headroom back. A holder's agent is named in its spend report. A part is rewritten
only when it moved (``_slice_moved``): its own holders' grants or demand, whether others hold or
want anything, window, limit or share, or the fleet's use or settled floor by
``SLICE_USED_STEP`` of the limit (a hint on the sidecar, which admits only from its own grant):
per tick, a fleet's slice writes are bounded by the agents whose part changed. A sidecar from
before slices has no agent in its reports and reads ``quotas/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from configsvc.budgets.quota_view import holders_of, spend_report, view
from configsvc.leader import Election, LeaderLoop

__all__ = ["BUDGET_ELECTION", "BudgetController", "holders_of"]
from holdfast.keyspace import Keyspace, RecordError
from holdfast.keyspace.budget import Budget
from holdfast.keyspace.quota import OTHERS, Quotas, SpendReport, agent_part
from holdfast.logs import get_logger
from holdfast.store import CasConflict, KeyValue, Put, Store, StoreError

log = get_logger(__name__)

BUDGET_ELECTION: Final = "budget-controller"
DEFAULT_BUDGET_TICK: Final = 0.5
SLICE_USED_STEP: Final = 0.01


class BudgetController:
    def __init__(
        self,
        store: Store,
        keyspace: Keyspace,
        election: Election,
        *,
        tick: float = DEFAULT_BUDGET_TICK,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.keyspace = keyspace
        self.election = election
        self.tick = tick
        self.clock = clock
        self.ticks = 0
        # (agent, meter) -> the slice as last written; None: read them from etcd first (a new
        # leader does not know what the previous one wrote).
        self._slices: dict[tuple[str, str], Quotas] | None = None
        self.slice_writes = 0
        self._loop = LeaderLoop(
            "budget controller",
            election,
            self.run_once,
            tick=tick,
            expected=(StoreError,),
            failed_event="budget_tick_failed",
            crashed_event="budget_tick_crashed",
        )

    def start(self) -> None:
        self._loop.start()

    async def close(self) -> None:
        await self._loop.close()

    async def _list(self, kind: str) -> list[KeyValue]:
        _, kvs = await self.store.list_prefix(self.keyspace.kind_prefix(kind))
        return kvs

    async def run_once(self) -> int:
        """One pass over every fleet-wide budget; returns how many quota records it wrote."""
        self.ticks += 1
        budgets: dict[str, tuple[Budget, int]] = {}  # meter id -> (budget, limit)
        for kv in await self._list("budgets"):
            try:
                budget = Budget.decode(kv.value)
            except RecordError as exc:
                log.warning("budget_record_unreadable", key=kv.key, reason=str(exc))
                continue
            if budget.fleet:
                for meter, _, limit in budget.meters():
                    budgets[meter] = (budget, limit)
        quotas: dict[str, tuple[Quotas | None, int]] = {}
        for kv in await self._list("quotas"):
            try:
                q: Quotas | None = Quotas.decode(kv.value)
            except RecordError:
                q = None  # unreadable: replaced below (CAS on its revision)
            scope = self.keyspace.parse(kv.key).parts[0]
            quotas[scope] = (q, kv.mod_revision)
        reports: dict[str, list[SpendReport]] = {}
        for kv in await self._list("spend"):
            report = spend_report(self.keyspace, kv)
            if report is not None:
                reports.setdefault(report.scope, []).append(report)
        if self._slices is None:
            self._slices = await self._load_slices()
        written = 0
        for meter, (budget, limit) in budgets.items():
            current, revision = quotas.get(meter, (None, 0))
            found = reports.get(meter, [])
            changed, now = await self._slice(budget, meter, limit, current, revision, found)
            written += changed
            if now is not None:
                await self._write_slices(meter, now, found)
        for scope, (_, revision) in quotas.items():
            if scope not in budgets:
                await self._drop(scope, revision)
        return written

    async def _load_slices(self) -> dict[tuple[str, str], Quotas]:
        found: dict[tuple[str, str], Quotas] = {}
        for kv in await self._list("slices"):
            try:
                agent, meter = self.keyspace.parse(kv.key).parts
                found[(agent, meter)] = Quotas.decode(kv.value)
            except (RecordError, ValueError):
                continue  # rewritten below, or deleted with its budget
        return found

    async def _write_slices(self, meter: str, quotas: Quotas, reports: list[SpendReport]) -> None:
        """Each agent's part of ``quotas``, where it changed (see the module's docstring)."""
        assert self._slices is not None
        holders: dict[str, set[str]] = {}
        for report in reports:
            if report.agent:
                holders.setdefault(report.agent, set()).add(report.holder)
        for agent, mine in holders.items():
            part = agent_part(quotas, mine)
            last = self._slices.get((agent, meter))
            if last is not None and not _slice_moved(last, part):
                continue
            await self.store.put(self.keyspace.slice(agent, meter), part.encode())
            self._slices[(agent, meter)] = part
            self.slice_writes += 1

    async def _slice(
        self,
        budget: Budget,
        meter: str,
        limit: int,
        current: Quotas | None,
        revision: int,
        reports: list[SpendReport],
    ) -> tuple[int, Quotas | None]:
        """(records written, the record as it stands now; None: another writer moved it)."""
        now = self.clock()
        fleet = view(budget, current, reports, now)
        window = fleet.span.id
        grants = {k: v for k, v in fleet.plan(limit).items() if v > 0}
        used = fleet.used()
        fair = fleet.share(limit)
        reported = fleet.reported()
        reserved = min(fleet.reserved(), used)
        demand = fleet.demand()
        same = (
            current is not None
            and current.window == window
            and current.limit == limit
            and current.grants == grants
            and current.used == used
            and current.share == fair
            and current.tails == fleet.tails
            and current.reported == reported
            and current.reserved == reserved
            and current.demand == demand
        )
        if same:
            return 0, current
        # A lowered limit does not take grants back: sidecars may have used them already.
        new = Quotas(
            scope=meter,
            window=window,
            limit=limit,
            grants=grants,
            used=used,
            share=fair,
            at=now,
            tails=fleet.tails,
            reported=reported,
            reserved=reserved,
            demand=demand,
        )
        try:
            await self.store.txn(
                [
                    Put(
                        self.keyspace.quotas(meter),
                        new.encode(),
                        expected_mod_revision=revision,
                    )
                ]
            )
        except CasConflict:
            log.info("budget_quotas_moved", scope=meter)
            return 0, None
        return 1, new

    async def _drop(self, scope: str, revision: int) -> None:
        key = self.keyspace.quotas(scope)
        kv = await self.store.get(key)
        if kv is not None and kv.mod_revision == revision:
            await self.store.delete(key)
            log.info("budget_quotas_dropped", scope=scope)
        for agent, meter in [k for k in (self._slices or {}) if k[1] == scope]:
            await self.store.delete(self.keyspace.slice(agent, meter))
            del self._slices[(agent, meter)]  # type: ignore[union-attr]


def _slice_moved(last: Quotas, part: Quotas) -> bool:
    """Whether an agent's part changed enough to be written again: its own holders' grants and
    demand exactly (a waiting sidecar is woken by its slice), whether other agents' holders
    hold or want anything (not how much: that moves with every tick elsewhere), and the
    fleet's use and settled floor by ``SLICE_USED_STEP`` of the limit."""
    if (last.window, last.limit, last.share) != (part.window, part.limit, part.share):
        return True
    if _own(last.grants) != _own(part.grants) or _own(last.demand) != _own(part.demand):
        return True
    if (OTHERS in last.grants, OTHERS in last.demand) != (
        OTHERS in part.grants,
        OTHERS in part.demand,
    ):
        return True
    step = max(1, int(part.limit * SLICE_USED_STEP))
    crossed = (last.used >= part.limit) != (part.used >= part.limit)
    return (
        crossed
        or abs(part.used - last.used) >= step
        or abs(part.settled_floor - last.settled_floor) >= step
    )


def _own(entries: dict[str, int]) -> dict[str, int]:
    return {h: v for h, v in entries.items() if h != OTHERS}
