"""/status's process figures without psutil: the resident size from prometheus_client's
process collector, the CPU share from this process's CPU clock."""

from __future__ import annotations

import sys

import pytest

from sidecar.ops.process import ProcessReadings


def test_cpu_percent_is_cpu_time_over_wall_time_since_the_previous_reading() -> None:
    cpu, wall = [10.0], [100.0]
    readings = ProcessReadings(cpu_clock=lambda: cpu[0], wall_clock=lambda: wall[0])
    cpu[0], wall[0] = 10.5, 102.0  # a quarter of a core over two seconds
    assert readings.cpu_percent() == 25.0
    cpu[0], wall[0] = 13.5, 104.0  # more than one core: several threads busy
    assert readings.cpu_percent() == 150.0
    assert readings.cpu_percent() == 0.0  # no time has passed: nothing to divide by


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_resident_size_is_this_process_s() -> None:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    rss = ProcessReadings().rss_bytes()
    assert rss is not None
    assert abs(rss - pages * 4096) < 64 * 1024 * 1024
