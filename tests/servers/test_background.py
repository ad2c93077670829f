"""The background-task holder and the leader-only controller loop, on a real event loop."""

from __future__ import annotations

import asyncio

from configsvc.leader.loop import LeaderLoop
from holdfast.background import BackgroundTask
from holdfast.store import StoreError


async def test_background_task_starts_once_and_cancel_waits_for_the_end() -> None:
    runs = 0
    ended = asyncio.Event()

    async def work() -> None:
        nonlocal runs
        runs += 1
        try:
            await asyncio.sleep(3600)
        finally:
            ended.set()

    holder = BackgroundTask("test worker")
    assert holder.start(work) is True
    assert holder.start(work) is False
    await asyncio.sleep(0)
    assert (holder.running, runs) == (True, 1)
    await holder.cancel()
    assert (ended.is_set(), holder.running, holder.started) == (True, False, False)
    await holder.cancel()  # idempotent


async def test_background_join_waits_without_cancelling() -> None:
    stop = asyncio.Event()
    finished = False

    async def work() -> None:
        nonlocal finished
        await stop.wait()
        finished = True

    holder = BackgroundTask("joined worker")
    holder.start(work)
    stop.set()
    await holder.join()
    assert finished


class Seat:
    def __init__(self) -> None:
        self.is_leader = False


async def test_leader_loop_runs_only_while_leading_and_survives_failures() -> None:
    seat = Seat()
    calls: list[str] = []
    outcomes = iter(["store", "bug", "ok"])

    async def round_() -> None:
        outcome = next(outcomes, "ok")
        calls.append(outcome)
        if outcome == "store":
            raise StoreError("etcd down")
        if outcome == "bug":
            raise RuntimeError("a bug")

    loop = LeaderLoop(
        "test controller",
        seat,
        round_,
        tick=0.01,
        expected=(StoreError,),
        failed_event="test_round_failed",
        crashed_event="test_round_crashed",
    )
    loop.start()
    await asyncio.sleep(0.08)
    assert calls == []  # not leading: no round at all
    seat.is_leader = True
    async with asyncio.timeout(5):
        while len(calls) < 4:
            await asyncio.sleep(0.01)
    assert calls[:3] == ["store", "bug", "ok"]  # neither failure ended the loop
    await loop.close()
    seen = len(calls)
    await asyncio.sleep(0.05)
    assert len(calls) == seen


async def test_background_task_names_the_asyncio_task() -> None:
    holder = BackgroundTask("named worker")
    holder.start(lambda: asyncio.sleep(3600))
    assert "named worker" in {t.get_name() for t in asyncio.all_tasks()}
    await holder.cancel()
