"""This process's resident memory and CPU share, as ``/status`` shows them.

The resident size is what prometheus_client's process collector reads from ``/proc`` (the
library is loaded for ``/metrics`` anyway; None where there is no ``/proc``). The CPU share is
the process's CPU time (every thread, user and system) over the wall time since the previous
reading, in percent of one core, as psutil's ``cpu_percent(None)`` gave it. psutil is not used
for these two figures: it is ~0.9 MB resident (bench/memory.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client.process_collector import ProcessCollector

RSS_METRIC = "process_resident_memory_bytes"


class ProcessReadings:
    def __init__(
        self,
        cpu_clock: Callable[[], float] = time.process_time,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._collector = ProcessCollector(registry=None)
        self._cpu_clock = cpu_clock
        self._wall_clock = wall_clock
        self._cpu = cpu_clock()
        self._wall = wall_clock()

    def rss_bytes(self) -> int | None:
        for family in self._collector.collect():
            if family.name == RSS_METRIC and family.samples:
                return int(family.samples[0].value)
        return None

    def cpu_percent(self) -> float:
        """Percent of one core since the previous call (or since this object was made)."""
        cpu, wall = self._cpu_clock(), self._wall_clock()
        spent, elapsed = cpu - self._cpu, wall - self._wall
        self._cpu, self._wall = cpu, wall
        return round(100.0 * spent / elapsed, 1) if elapsed > 0 else 0.0
