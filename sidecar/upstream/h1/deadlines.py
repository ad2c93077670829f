"""Deadlines of the calls in flight without a timer per call.

Each call carries its deadline as a float (``Timed.deadline``, loop time; ``inf`` for none) and
moves it by assignment: a stream's idle deadline goes forward on every read at the cost of a
store. One timer handle per client is armed at the earliest deadline it knows of; when it fires
it expires what is due and re-arms at the earliest of the rest. A deadline only needs a word to
the sweeper (``moved``) when it moves *earlier* than the armed time, which happens when a call
starts with a shorter timeout than the ones in flight. In steady state the timer fires about once
per timeout period, whatever the request rate.
"""

from __future__ import annotations

import asyncio
import math
from typing import Generic, Protocol, TypeVar


class Timed(Protocol):
    deadline: float

    def expire(self) -> None:
        """The deadline passed: fail the call (and leave the sweeper's set)."""


T = TypeVar("T", bound=Timed)


class Sweeper(Generic[T]):
    """The calls in flight (also what ``cut`` ends) and the one timer over their deadlines."""

    __slots__ = ("_at", "_calls", "_handle", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._calls: set[T] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._at = math.inf

    def __len__(self) -> int:
        return len(self._calls)

    def calls(self) -> list[T]:
        return list(self._calls)

    def add(self, call: T) -> None:
        self._calls.add(call)
        if call.deadline < self._at:
            self._arm(call.deadline)

    def moved(self, call: T) -> None:
        """``call.deadline`` may now be earlier than the armed time."""
        if call.deadline < self._at:
            self._arm(call.deadline)

    def discard(self, call: T) -> None:
        # The timer stays armed: it fires once for nothing, cheaper than a cancel per call.
        self._calls.discard(call)

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._at = when
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle, self._at = None, math.inf
        now = self._loop.time()
        due: list[T] = []
        earliest = math.inf
        for call in self._calls:
            if call.deadline <= now:
                due.append(call)
            elif call.deadline < earliest:
                earliest = call.deadline
        for call in due:
            self._calls.discard(call)
            call.expire()
        if earliest < math.inf and earliest < self._at:
            self._arm(earliest)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle, self._at = None, math.inf
        self._calls.clear()
