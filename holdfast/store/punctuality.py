"""How late this process's event loop runs a timer: the measure of its own starvation.

One sampler per event loop, shared by everything on it (a sidecar's mirror, the simulator's
thousands of mirrors): a 100 ms timer whose lateness is kept for the last minute. Its users
acquire it (the first starts it) and release it (the last stops it), so no task outlives them.
``holdfast.store.liveness`` decides what a given lateness means for a failed call.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from typing import Final

TICK_S: Final = 0.1
_KEPT: Final = 600  # ticks: a minute at 10 a second


class Punctuality:
    """The lateness of a periodic timer on one loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._ticks: deque[tuple[float, float]] = deque(maxlen=_KEPT)  # (fired at, late by)
        self._due = loop.time() + TICK_S
        self._users = 0
        self._task: asyncio.Task[None] | None = None

    def late_since(self, since: float) -> float:
        """The longest the loop ran a timer late after ``since`` (``loop.time()``), counting
        a tick that is overdue now. Only lateness after ``since`` counts."""
        now = self._loop.time()
        worst = 0.0
        if self._task is not None:
            worst = max(0.0, min(now - self._due, now - since))
        for fired, late in reversed(self._ticks):
            if fired < since:
                break
            worst = max(worst, min(late, fired - since))
        return worst

    async def _run(self) -> None:
        while True:
            self._due = self._loop.time() + TICK_S
            await asyncio.sleep(TICK_S)
            now = self._loop.time()
            self._ticks.append((now, max(0.0, now - self._due)))

    def _acquire(self) -> None:
        self._users += 1
        if self._task is None:
            self._due = self._loop.time() + TICK_S
            self._task = self._loop.create_task(self._run(), name="loop punctuality")

    def _release(self) -> None:
        self._users = max(0, self._users - 1)
        if self._users == 0 and self._task is not None:
            self._task.cancel()
            self._task = None
            self._ticks.clear()


_samplers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Punctuality] = (
    weakref.WeakKeyDictionary()
)


def acquire() -> Punctuality:
    """The running loop's sampler, started if this is its first user."""
    loop = asyncio.get_running_loop()
    sampler = _samplers.get(loop)
    if sampler is None:
        sampler = _samplers[loop] = Punctuality(loop)
    sampler._acquire()
    return sampler


def release(sampler: Punctuality) -> None:
    """Done with ``sampler``; the last user's release stops it."""
    sampler._release()


def current() -> Punctuality | None:
    """The running loop's sampler if something keeps it running, else None."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    sampler = _samplers.get(loop)
    return sampler if sampler is not None and sampler._task is not None else None
