"""The sidecar's side of fleet-wide budgets: follow its slices, report its spend.

* ``slices/<agent>/<scope>`` (this agent's part of ``quotas/<scope>``, written by configsvc's
  budget controller) is mirrored; this sidecar's entry becomes its meter's grant for that
  window. Other agents' grants never reach it.
* ``spend/<holder>/<scope>`` is written every ``interval`` (when it changed) under this
  sidecar's own lease: while the key exists the controller knows the sidecar is alive and may
  grow its slice. Tokens of a slice it has not used for ``idle_after`` seconds are given back
  (``returned`` only grows), so the controller can hand them to busier sidecars -- once per
  idle spell: what the controller grants it again while it idles stays with it (giving it back
  at every report made ``returned`` race the grant up without end). A request refused or
  waiting here ends the spell as much as one admitted: a sidecar whose requests are refused is
  not idle, and handing back the slice they wait for would starve them.
* Slices follow demand: the report says what the requests waiting for room here need
  (``queued``, ``waiting``; sidecar.budgets.queue), and the controller publishes every holder's
  such demand in ``quotas/<scope>``. A sidecar with no request waiting, idle for two report
  intervals, that sees another's demand gives back its headroom beyond what it reserved in the
  last interval; one whose slice could not serve the request at the head of its queue even once
  all it has in flight settles gives back all of its headroom, so the controller can hand the
  pieces of a fragmented budget to one holder (the one closest to serving its head). The report
  goes out at once when requests start waiting or others' demand arrives.

The holder id is the sidecar id plus a per-process suffix: a restarted sidecar starts with an
empty slice instead of re-using one its previous incarnation may have spent already. With etcd
or configsvc unreachable, nothing here blocks requests; the sidecar keeps admitting from the
slices it holds, and only from those.

On a graceful shutdown (``close``) the sidecar gives back everything it has not used and writes
a *final* report of each fleet scope under a short lease of its own, so the controller frees
the rest of its slices at once instead of counting them until the window ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Callable
from typing import Any, Final

from holdfast.background import BackgroundTask
from holdfast.keyspace import Keyspace, RecordError
from holdfast.keyspace.quota import DEPARTED, Quotas, SpendReport
from holdfast.logs import get_logger
from holdfast.store import Store, StoreError
from holdfast.store.lease import LeaseKeeper
from holdfast.store.mirror import MirrorUpdate, PrefixMirror
from sidecar.budgets.ledger import Ledger
from sidecar.budgets.meter import Meter
from sidecar.budgets.metrics import meter_status
from sidecar.budgets.queue import AdmissionQueue
from sidecar.config import ConfigState

log = get_logger(__name__)

SPEND_LEASE_TTL: Final = 6
# A final report outlives its sidecar this long, so that a controller that is slow, or being
# re-elected, still reads it; the claims it states stay exact after it has gone.
FINAL_REPORT_TTL: Final = 60
FINAL_REPORT_TIMEOUT: Final = 2.0  # shutdown does not wait on a down etcd for longer
EXCESS_SHARES: Final = 2  # headroom above this many equal shares is given back


def holder_id(sidecar_id: str) -> str:
    return f"{sidecar_id[:110]}.{secrets.token_hex(4)}"


class BudgetKeeper:
    def __init__(
        self,
        store: Store,
        keyspace: Keyspace,
        ledger: Ledger,
        config: ConfigState,
        *,
        sidecar_id: str,
        interval: float,
        idle_after: float,
        clock: Callable[[], float] = time.time,
        queue: AdmissionQueue | None = None,
    ) -> None:
        self.queue = queue  # requests waiting for budget: their demand goes into the reports
        self._reserved_seen: dict[str, int] = {}  # meter id -> Tally.reserved_total last report
        self.store = store
        self.keyspace = keyspace
        self.ledger = ledger
        self.config = config
        self.holder = holder_id(sidecar_id)
        self.interval = interval
        self.idle_after = idle_after
        self.clock = clock
        self.quotas: dict[str, Quotas] = {}
        # No liveness probe of its own: it shares the store, and so the watch stream, with the
        # sidecar's main mirror, which probes; the store fails the stream over as a whole.
        # Without an agent (tests of the ledger alone), every slice of the fleet.
        slices = (
            keyspace.agent_prefix("slices", ledger.agent)
            if ledger.agent
            else keyspace.kind_prefix("quotas")
        )
        self.mirror = PrefixMirror(store, slices, probe_interval=None)
        self.lease = LeaseKeeper(store, SPEND_LEASE_TTL, on_new_lease=self._new_lease)
        self._written: dict[str, SpendReport] = {}
        # meter id -> (requests seen: admitted + refused, since when that count held, whether
        # this idle spell's give-back is done)
        self._activity: dict[str, tuple[int, float, bool]] = {}
        self._task = BackgroundTask("budget spend reporter")
        self._closing = False
        self._writing = asyncio.Lock()  # a final report is never overtaken by a live one
        self._wake = asyncio.Event()  # a request found no slice: report now, not next interval
        self._slices = asyncio.Event()  # set (and replaced) whenever new slices arrive
        self.report_failures = 0

    async def start(self) -> None:
        self.mirror.subscribe(self._on_quotas)
        await self.mirror.start()
        self._task.start(self._run)

    async def close(self) -> None:
        """Stop reporting, hand back every unused slice with a final report, then revoke the
        lease (call it once no request is in flight any more)."""
        await self._task.cancel()
        self._closing = True  # a lease granted meanwhile must not rewrite a live report
        # One bound for both: with etcd away the lease expires on its own anyway.
        try:
            async with asyncio.timeout(FINAL_REPORT_TIMEOUT):
                await self._hand_back()
                await self.lease.close(revoke=True)
        except TimeoutError:
            await self.lease.close(revoke=False)
        await self.mirror.close()

    def _on_quotas(self, update: MirrorUpdate) -> None:
        quotas: dict[str, Quotas] = {}
        for kv in update.kvs.values():
            try:
                q = Quotas.decode(kv.value)
            except RecordError as exc:
                log.warning("budget_quotas_rejected", key=kv.key, reason=str(exc))
                continue
            quotas[q.scope] = q
        self.quotas = quotas
        self._apply_quotas()
        arrived, self._slices = self._slices, asyncio.Event()
        arrived.set()
        if self.queue is not None:
            self.queue.pump()  # bigger slices, or a fleet floor that says waiting cannot help
        if any(set(q.demand) - {self.holder} for q in quotas.values()):
            self._wake.set()  # others wait for room: give back idle headroom now

    def wake(self) -> None:
        """Report now, not at the next interval (requests started waiting for room)."""
        self._wake.set()

    async def wait_for_slices(self, seconds: float) -> bool:
        """Report this sidecar's want at once and wait, at most ``seconds``, for the
        controller's next slices; False when none came (configsvc or etcd away)."""
        arrived = self._slices
        self._wake.set()
        try:
            async with asyncio.timeout(seconds):
                await arrived.wait()
        except TimeoutError:
            return False
        return True

    def _apply_quotas(self) -> None:
        for scope, meter in self.ledger.meters.items():
            if not meter.budget.fleet:
                continue
            q = self.quotas.get(scope)
            if q is None:
                self.ledger.set_grant(scope, "", 0, 0)
            else:
                self.ledger.set_grant(
                    scope, q.window, q.grants.get(self.holder, 0), q.used, q.settled_floor
                )

    async def _new_lease(self, lease_id: int) -> None:
        self._written.clear()  # the old lease took our keys with it: write them all again
        await self.report()

    async def _run(self) -> None:
        # The first report goes out at once: the controller hands out slices only to sidecars
        # that reported, so a fresh sidecar gets its first slices one controller tick later.
        # The lease is granted here, not in start: a down etcd must not hold up the sidecar.
        await self.lease.start()
        while True:
            try:
                await self.report()
            except StoreError as exc:
                self.report_failures += 1
                log.warning("budget_spend_report_failed", error=str(exc))
            except Exception:  # a bug must not end reporting for the life of the process
                self.report_failures += 1
                log.exception("budget_spend_report_crashed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()

    def reports(self) -> list[SpendReport]:
        """Bring the ledger up to date and describe this sidecar's spend (pure).

        Fleet scopes are always reported (the report is how the controller knows this sidecar
        holds or wants a slice); a session scope only once this sidecar has seen the session
        in the window, for ``budget usage`` -- nobody slices those.
        """
        now = self.clock()
        snapshot = self.config.current
        if snapshot is not None:
            self.ledger.sync(snapshot.of_kind("budgets"), now)
        self._apply_quotas()
        demand = self.queue.demand() if self.queue is not None else {}
        out = []
        for scope, meter in self.ledger.meters.items():
            meter.rotate(now)
            t = meter.tally
            mine = demand.get(scope, (0, 0, 0))
            if not meter.budget.fleet and not (
                t.admitted or t.refused or t.spent or t.reserved or mine[0]
            ):
                continue
            self._give_back_idle(scope, meter, now, waiting=mine[0])
            self._follow_demand(scope, meter, mine, now)
            report = self._report(scope, meter, now, demand=mine)
            if report is not None:
                out.append(report)
            t.want = 0
        return out

    def _give_back_idle(self, scope: str, meter: Meter, now: float, *, waiting: int) -> None:
        seen = meter.tally.admitted + meter.tally.refused
        last, since, done = self._activity.get(scope, (-1, now, False))
        if seen != last or waiting:
            self._activity[scope] = (seen, now, False)
        elif not done and now - since >= self.idle_after:
            self._activity[scope] = (seen, since, True)
            back = meter.give_back(0)
            if back:
                log.info("budget_slice_returned", scope=scope, returned=back, to="idle")
        quotas = self.quotas.get(scope)
        current = meter.grant_window if meter.rolling else meter.tally.span.id
        if quotas is not None and quotas.window == current and quotas.share:
            meter.give_back(EXCESS_SHARES * quotas.share)  # far above an equal part

    def _follow_demand(
        self, scope: str, meter: Meter, mine: tuple[int, int, int], now: float
    ) -> None:
        """Hand headroom to where requests wait (see the module docstring)."""
        t = meter.tally
        seen = self._reserved_seen.get(scope, t.reserved_total)
        self._reserved_seen[scope] = t.reserved_total
        recent = max(0, t.reserved_total - seen)  # what this sidecar reserved since last time
        if not meter.budget.fleet:
            return
        quotas = self.quotas.get(scope)
        current = meter.grant_window if meter.rolling else t.span.id
        if quotas is None or quotas.window != current:
            return
        waiting, _, head = mine
        others = any(h not in (self.holder, DEPARTED) for h in quotas.grants)
        if waiting and meter.allowance - t.spent < head and others:
            # Even once everything in flight here settles, this slice cannot serve the request
            # at the head: let the controller put its headroom together with what others hold
            # (alone, it would only come back). Reservations in flight stay covered.
            back = meter.give_back(0)
        elif not waiting and set(quotas.demand) - {self.holder} and self._idle(scope, now):
            back = meter.give_back(recent)
        else:
            return
        if back:
            log.info("budget_slice_returned", scope=scope, returned=back, to="demand")

    def _idle(self, scope: str, now: float) -> bool:
        """No admission here for two report intervals: a sidecar whose own burst is only just
        arriving keeps its slice."""
        _, since, _ = self._activity.get(scope, (-1, now, False))
        return now - since >= 2 * self.interval

    def _report(
        self,
        scope: str,
        meter: Meter,
        now: float,
        *,
        final: bool = False,
        demand: tuple[int, int, int] = (0, 0, 0),
    ) -> SpendReport | None:
        t = meter.tally
        # Rolling windows: the report names the epoch of the slice it accounts against
        # (what it returned is relative to that grant); ``used`` is the live window's.
        window = meter.grant_window if meter.rolling and meter.grant_window else t.span.id
        try:
            return SpendReport(
                scope=scope,
                holder=self.holder,
                window=window,
                used=t.spent + t.reserved,
                reserved=t.reserved,
                returned=meter.returned,
                estimated=t.estimated,
                want=max(t.want, demand[2]),  # the head's need: room that lets one go
                at=now,
                final=final,
                agent=self.ledger.agent or "",
                queued=demand[1],
                waiting=demand[0],
                refused_spent=t.refused - t.refused_wait,
                refused_busy=t.refused_wait,
                waits=t.waits,
                wait_ms=t.wait_ms,
                wait_max_ms=t.wait_max_ms,
            )
        except RecordError as exc:  # one broken meter must not stop the others' reports
            log.warning("budget_spend_report_invalid", scope=scope, reason=str(exc))
            return None

    def final_reports(self) -> list[SpendReport]:
        """Give back every unused part of every fleet slice and describe, for good, what this
        sidecar used (pure). Afterwards each fleet meter's allowance is what it used, so it
        admits nothing more."""
        now = self.clock()
        out = []
        for scope, meter in self.ledger.meters.items():
            if not meter.budget.fleet:
                continue
            meter.rotate(now)
            meter.give_back(0)
            if not (meter.grant or meter.used):
                continue  # never held anything: nothing to account for
            report = self._report(scope, meter, now, final=True)
            if report is not None:
                out.append(report)
        return out

    async def report(self) -> None:
        async with self._writing:
            lease = self.lease.lease_id
            if not lease or self._closing:
                return
            for report in self.reports():
                last = self._written.get(report.scope)
                if last is not None and last.public() | {"at": 0} == report.public() | {"at": 0}:
                    continue
                await self.store.put(
                    self.keyspace.spend(report.scope, self.holder), report.encode(), lease=lease
                )
                self._written[report.scope] = report

    async def _hand_back(self) -> None:
        """Final reports under a short lease of their own: the controller folds them into the
        fleet view (this sidecar's unused slices become free at once) before they expire."""
        finals = self.final_reports()
        if not finals:
            return
        try:
            async with asyncio.timeout(FINAL_REPORT_TIMEOUT), self._writing:
                lease = await self.store.grant_lease(FINAL_REPORT_TTL)
                for report in finals:
                    key = self.keyspace.spend(report.scope, self.holder)
                    await self.store.put(key, report.encode(), lease=lease)
        except (StoreError, TimeoutError) as exc:
            # The controller counts our claims as of our last report: safe, less usable.
            log.warning("budget_final_report_failed", scopes=len(finals), error=str(exc))
            return
        log.info(
            "budget_slices_handed_back",
            scopes=len(finals),
            used=sum(r.used for r in finals),
            returned=sum(r.returned for r in finals),
        )

    def status(self) -> dict[str, Any]:
        demand = self.queue.demand() if self.queue is not None else {}
        return {
            "holder": self.holder,
            "report_failures": self.report_failures,
            "slices_connected": self.mirror.connected,
            "waiting": self.queue.waiting if self.queue is not None else 0,
            "waiting_bytes": self.queue.bytes if self.queue is not None else 0,
            "scopes": [
                meter_status(m, demand.get(key, (0, 0, 0)))
                for key, m in sorted(self.ledger.meters.items())
            ],
        }
