"""The event-loop lag monitor sees a stall: a blocking call on the loop shows up as lag of about
its length, in the histogram and in /status's recent p99."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, generate_latest

from sidecar.ops.loop_lag import LoopLag, p99


async def test_a_blocked_loop_is_measured() -> None:
    registry = CollectorRegistry()
    lag = LoopLag(registry, "support", interval=0.01)
    lag.start()
    try:
        await asyncio.sleep(0.1)  # quiet samples first
        quiet = max(lag.recent)
        time.sleep(0.12)  # noqa: ASYNC251 - the stall under test
        await asyncio.sleep(0.05)
        status = lag.status()
    finally:
        await lag.close()
    assert status["sampling"] is True and status["samples"] >= 5
    assert status["max_ms"] >= 100  # the stall, seen by the timer due during it
    assert max(lag.recent) > quiet
    text = generate_latest(registry).decode()
    assert 'holdfast_event_loop_lag_seconds_bucket{agent="support",le="0.1"}' in text
    assert lag.status()["sampling"] is False  # closed: the task is gone


def test_p99() -> None:
    assert p99([]) == 0.0
    assert p99([0.001] * 99 + [1.0]) == 0.001
    assert p99([0.001] * 98 + [1.0, 2.0]) == 1.0
