"""The loop every leader-only controller runs: tick, skip unless leading, run one round.

An expected failure (etcd down, a conflict) is logged as a warning and the next tick retries;
anything else is a bug, logged with its traceback, and must still not end the controller for
the life of the process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from holdfast.background import BackgroundTask
from holdfast.logs import get_logger

log = get_logger(__name__)


class Leadership(Protocol):
    @property
    def is_leader(self) -> bool: ...


class LeaderLoop:
    def __init__(
        self,
        name: str,
        election: Leadership,
        round_: Callable[[], Awaitable[object]],
        *,
        tick: float,
        expected: tuple[type[Exception], ...],
        failed_event: str,
        crashed_event: str,
    ) -> None:
        self.election = election
        self.tick = tick
        self._round = round_
        self._expected = expected
        self._failed_event = failed_event
        self._crashed_event = crashed_event
        self._task = BackgroundTask(name)

    def start(self) -> None:
        self._task.start(self._run)

    async def close(self) -> None:
        await self._task.cancel()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            if not self.election.is_leader:
                continue
            try:
                await self._round()
            except self._expected as exc:
                log.warning(self._failed_event, error=str(exc))
            except Exception:
                log.exception(self._crashed_event)
