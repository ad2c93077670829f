"""How late the event loop runs what is due: the sidecar's own stall detector.

Every ``interval`` a timer is due; the time it actually ran minus the time it was due is the
loop's lag at that moment -- what any request or stream chunk waiting at that instant waited
extra because something else held the loop (a big JSON encode, a periodic job, a GC pause).
Observed into ``holdfast_event_loop_lag_seconds`` (a histogram) and kept for ``/status`` as the
recent p99 and maximum. A 20 Hz timer costs a few microseconds of CPU per second.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import Any, Final

from prometheus_client import CollectorRegistry

from holdfast.background import BackgroundTask
from holdfast.tally import HistogramFamily, Tally

INTERVAL_S: Final = 0.05
RECENT: Final = 1200  # samples kept for /status: one minute at the default interval
# Fine around the 2 ms that on-call alerts on and the bench judges, so that a p99 estimated
# from the buckets is not smeared over 2-5 ms. uvloop's clock counts whole milliseconds, so a
# lag reads as a whole number of them (the part of a millisecond is dropped, never added).
BOUNDS: Final = (
    0.0005, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1.0, 5.0,
)  # fmt: skip


def p99(samples: list[float]) -> float:
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


class LoopLag:
    def __init__(self, registry: CollectorRegistry, agent: str, interval: float = INTERVAL_S):
        self.agent = agent
        self.interval = interval
        self.lag = HistogramFamily(
            "holdfast_event_loop_lag_seconds",
            "How late the sidecar's event loop ran a timer that was due (sampled every "
            f"{interval:g} s): time any request waited extra because the loop was busy.",
            ["agent"],
            BOUNDS,
        )
        Tally(registry, self.lag)
        self.recent: deque[float] = deque(maxlen=RECENT)
        self._task = BackgroundTask("loop_lag")

    def start(self) -> None:
        self._task.start(self._run)

    async def close(self) -> None:
        await self._task.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        labels = (self.agent,)
        while True:
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            # to the microsecond: whole milliseconds apart would otherwise miss their bucket
            # by a float's rounding error
            lag = round(max(0.0, loop.time() - due), 6)
            self.lag.observe(labels, lag)
            self.recent.append(lag)

    def status(self) -> dict[str, Any]:
        samples = list(self.recent)
        return {
            "sampling": self._task.running,
            "interval_s": self.interval,
            "samples": len(samples),
            "p99_ms": round(p99(samples) * 1000, 3),
            "max_ms": round(max(samples, default=0.0) * 1000, 3),
        }
