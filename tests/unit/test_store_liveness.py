"""Tier 1: when a failed liveness probe restarts a watch; how late the loop runs, measured."""

from __future__ import annotations

import asyncio
import time

import pytest

from holdfast.store import punctuality
from holdfast.store.liveness import (
    MAX_EXCUSED,
    STARVED_MIN_S,
    ProbeResult,
    Verdict,
    judge_probe,
    starved,
)


def failed(elapsed: float, late: float, heard: bool = False) -> ProbeResult:
    return ProbeResult(failed=True, elapsed=elapsed, loop_late=late, stream_heard=heard)


def test_an_answer_is_alive_whatever_the_loop() -> None:
    ok = ProbeResult(failed=False, elapsed=9.0, loop_late=8.0, stream_heard=False)
    assert judge_probe(ok, 0) is Verdict.ALIVE
    assert judge_probe(ok, MAX_EXCUSED + 3) is Verdict.ALIVE


def test_an_outage_with_a_punctual_loop_restarts_at_once() -> None:
    # etcd silent for the whole 5 s budget while the loop ran within a few ms: as before.
    assert judge_probe(failed(5.0, 0.004), 0) is Verdict.DEAD
    # every endpoint refused (2 s grace) with a loop a little late now and then
    assert judge_probe(failed(2.1, 0.15), 0) is Verdict.DEAD


def test_a_probe_failed_on_a_starved_loop_is_excused() -> None:
    # the loop ran 3 s late during a 5.5 s probe: the deadline passed while this process was busy
    assert judge_probe(failed(5.5, 3.0), 0) is Verdict.EXCUSED
    # late by a large share of a short call
    assert judge_probe(failed(0.8, 0.5), 2) is Verdict.EXCUSED


def test_a_stream_that_delivered_during_the_probe_is_not_hanging() -> None:
    assert judge_probe(failed(5.0, 0.0, heard=True), 0) is Verdict.EXCUSED


def test_excuses_run_out_so_a_hang_on_a_starved_process_is_still_found() -> None:
    starving = failed(5.5, 3.0)
    verdicts = [judge_probe(starving, n) for n in range(MAX_EXCUSED + 1)]
    assert verdicts[:MAX_EXCUSED] == [Verdict.EXCUSED] * MAX_EXCUSED
    assert verdicts[MAX_EXCUSED] is Verdict.DEAD
    assert judge_probe(failed(5.0, 0.0, heard=True), MAX_EXCUSED) is Verdict.DEAD


@pytest.mark.parametrize(
    ("late", "elapsed", "expected"),
    [
        (0.0, 5.0, False),
        (STARVED_MIN_S - 0.01, 0.3, False),  # too little lateness to blame, however short the call
        (1.0, 5.0, False),  # a fifth of the call: the endpoint had most of its budget
        (1.25, 5.0, True),
        (STARVED_MIN_S, 0.5, True),
    ],
)
def test_starved_needs_both_an_absolute_and_a_relative_lateness(
    late: float, elapsed: float, expected: bool
) -> None:
    assert starved(late, elapsed) is expected


def test_punctuality_measures_a_blocked_loop_and_stops_with_its_last_user() -> None:
    async def scenario() -> tuple[float, float, float, bool, bool]:
        loop = asyncio.get_running_loop()
        first = punctuality.acquire()
        second = punctuality.acquire()
        assert first is second  # one sampler per loop
        await asyncio.sleep(0.35)
        before = loop.time()
        calm = first.late_since(before - 0.3)
        time.sleep(0.6)  # noqa: ASYNC251 - the loop blocked: the sampler's timer fires late
        blocked = first.late_since(before)  # overdue now, before the tick has even run
        await asyncio.sleep(0.25)
        after = first.late_since(before)
        punctuality.release(first)
        still = punctuality.current() is first
        punctuality.release(second)
        return calm, blocked, after, still, punctuality.current() is None

    calm, blocked, after, still, stopped = asyncio.run(scenario())
    assert calm < 0.1
    assert blocked >= 0.45
    assert after >= 0.45
    assert still and stopped


def test_no_sampler_outside_a_loop_or_without_users() -> None:
    assert punctuality.current() is None

    async def idle() -> bool:
        return punctuality.current() is None

    assert asyncio.run(idle())
