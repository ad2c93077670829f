"""One long-lived task owned by a component: started at most once, cancelled and awaited on close.

Every periodic worker in both packages (lease keepers, publishers, controllers, pin writers)
holds one of these instead of a bare ``asyncio.create_task``, so shutdown always finds and
cancels it and nothing is left running against a closed store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


class BackgroundTask:
    def __init__(self, name: str) -> None:
        self.name = name
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def started(self) -> bool:
        return self._task is not None

    def start(self, work: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Start ``work()`` unless already started; False when it was."""
        if self._task is not None:
            return False
        self._task = asyncio.create_task(work(), name=self.name)
        return True

    async def cancel(self) -> None:
        """Cancel the task and wait until it has ended; a no-op when not started."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])

    async def join(self) -> None:
        """Wait for a task that was told to stop by other means (never cancels it)."""
        task, self._task = self._task, None
        if task is not None:
            await task
