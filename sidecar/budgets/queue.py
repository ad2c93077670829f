"""Requests waiting for budget: FIFO per scope set, bounded, woken by every settlement and slice.

A request that does not fit its budgets *now*, but could once reservations in flight settle or
the controller moves slices to this sidecar (``sidecar.budgets.admission``), joins the queue of
its scope set (the meter ids that apply to it). ``pump`` -- called whenever room may have
appeared: a reservation settled or was released, new slices arrived, budgets changed -- looks at
the head of every queue and decides again: it reserves for the head on the spot (the same
synchronous check-and-reserve as an admission in ``open``; the waiting request then takes that
reservation), refuses it once waiting cannot help, or leaves it (and those behind it) waiting.
A request never overtakes an earlier one of its own scope set.

The queue holds at most ``max_waiting`` requests and ``max_bytes`` of their bodies; a request
that finds it full is refused at once. A request leaves it when its wait runs out or its agent
hangs up; a reservation made for a request that is gone is released at once.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from holdfast.logs import get_logger
from sidecar.budgets.admission import Admit, Need, Refuse, Wait, decide
from sidecar.budgets.ledger import Ledger, Reservation
from sidecar.budgets.meter import Meter

log = get_logger(__name__)

Plan = tuple[list[Meter], Need]


@dataclass(frozen=True, slots=True)
class Granted:
    """A reservation the queue made for a waiting request; the request's ``open`` takes it."""

    reservation: Reservation
    meters: list[Meter]
    need: Need


@dataclass(eq=False, slots=True)
class Waiter:
    key: tuple[str, ...]  # the scope set: the ids of the meters that apply
    size: int  # bytes of the request body held while it waits
    plan: Callable[[], Plan | None]  # its meters and need now (None: no budget applies any more)
    future: asyncio.Future[Granted | Refuse | None]
    since: float = field(default_factory=time.monotonic)
    # meter id -> what it needs there, as last planned: what the controller is told it wants
    needs: dict[str, int] = field(default_factory=dict)


class AdmissionQueue:
    def __init__(
        self,
        ledger: Ledger,
        *,
        max_waiting: int,
        max_bytes: int,
        slices_live: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ledger = ledger
        self.max_waiting = max_waiting
        self.max_bytes = max_bytes
        self.slices_live = slices_live
        self.clock = clock
        self._queues: dict[tuple[str, ...], deque[Waiter]] = {}
        self.waiting = 0
        self.bytes = 0
        self._pumping = False
        self.on_join: Callable[[], None] | None = None  # tell the controller (a report) now

    def busy(self, key: tuple[str, ...]) -> bool:
        """Whether requests of this scope set wait: a newcomer must not overtake them."""
        return bool(self._queues.get(key))

    def join(self, waiter: Waiter) -> bool:
        """Queue ``waiter`` behind its scope set; False when the queue is full."""
        if self.waiting >= self.max_waiting or self.bytes + waiter.size > self.max_bytes:
            return False
        self._queues.setdefault(waiter.key, deque()).append(waiter)
        self.waiting += 1
        self.bytes += waiter.size
        if self.on_join is not None:
            self.on_join()
        return True

    def leave(self, waiter: Waiter) -> None:
        """``waiter`` is done waiting (served, refused, timed out or gone). A reservation made
        for it that it did not take is released, and the room it frees is handed on."""
        queue = self._queues.get(waiter.key)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            self._forget(waiter)
            if not queue:
                del self._queues[waiter.key]
        future = waiter.future
        if future.done() and not future.cancelled():
            result = future.result()
            if isinstance(result, Granted) and not result.reservation.settled:
                Ledger.release(result.reservation)
                self.pump()
        elif not future.done():
            future.cancel()
            self.pump()  # those behind it may fit now

    def _forget(self, waiter: Waiter) -> None:
        self.waiting -= 1
        self.bytes -= waiter.size

    def pump(self) -> None:
        """Admit or refuse the head of every queue while it can be decided."""
        if self._pumping or not self.waiting:
            return
        self._pumping = True
        try:
            for key in list(self._queues):
                self._pump_one(key)
        finally:
            self._pumping = False

    def _pump_one(self, key: tuple[str, ...]) -> None:
        queue = self._queues[key]
        live = self.slices_live()
        while queue:
            head = queue[0]
            if head.future.done():  # cancelled by its task: ``leave`` will not find it now
                queue.popleft()
                self._forget(head)
                continue
            plan = head.plan()
            if plan is None:
                outcome: Granted | Refuse | None = None  # nothing meters it any more
            else:
                meters, need = plan
                decision = decide(meters, need, slices_live=live)
                if isinstance(decision, Wait):
                    head.needs = needs_of(meters, decision.need)
                    return
                if isinstance(decision, Admit):
                    reservation, _ = self.ledger.admit(
                        meters, decision.need.tokens, self.clock(), micros=decision.need.micros
                    )
                    if reservation is None:  # cannot happen: decide checked the same meters
                        log.error("budget_queue_admit_failed", scopes=list(key))
                        return
                    outcome = Granted(reservation, meters, decision.need)
                else:
                    outcome = decision
            queue.popleft()
            self._forget(head)
            head.future.set_result(outcome)
        del self._queues[key]

    def demand(self) -> dict[str, tuple[int, int, int]]:
        """Per meter id: (requests waiting, what they need together, the smallest need at the
        head of a queue -- the room that would let one of them go)."""
        out: dict[str, tuple[int, int, int]] = {}
        for queue in self._queues.values():
            for position, w in enumerate(queue):
                for meter, need in w.needs.items():
                    n, total, head = out.get(meter, (0, 0, 0))
                    if position == 0:
                        head = min(head, need) if head else need
                    out[meter] = (n + 1, total + need, head)
        return out


def needs_of(meters: list[Meter], need: Need) -> dict[str, int]:
    return {m.id: need.on(m) for m in meters}
