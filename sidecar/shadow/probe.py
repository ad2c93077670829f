"""One sampled request of shadow traffic: where the primary's answer meets the shadow's.

The primary hands over its answer (or gives up) here; the runner (``sidecar.shadow``) owns the
shadow call, and compares once both sides are in.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Literal

from holdfast.compare import Answer, answer_from_completion
from holdfast.logs import get_logger
from sidecar.shadow.book import StatsKey
from sidecar.shadow.sse_capture import SseCapture

if TYPE_CHECKING:
    from sidecar.shadow.runner import ShadowRunner

log = get_logger(__name__)

Outcome = Literal["compared", "skipped_busy", "skipped_budget", "error", "abandoned"]


class Probe:
    """One sampled request: the meeting point of the primary's answer and the shadow's.

    The primary calls exactly one of ``complete``, ``complete_body``, ``complete_stream`` or
    ``abandon`` (later calls are ignored, so ``abandon`` in a ``finally`` is always safe).
    Whichever side arrives second triggers the comparison.
    """

    __slots__ = (
        "_capture",
        "_counted",
        "_runner",
        "abandoned",
        "key",
        "primary",
        "settled",
        "shadow",
        "task",
    )

    def __init__(self, runner: ShadowRunner, key: StatsKey) -> None:
        self._runner = runner
        self.key = key
        self.settled = False  # the primary finished, one way or the other
        self.abandoned = False  # ... without an answer to compare
        self.primary: tuple[Answer, float] | None = None
        self.shadow: tuple[Answer, float] | None = None
        self.task: asyncio.Task[None] | None = None
        self._counted = False
        self._capture: SseCapture | None = None

    def complete(self, answer: Answer, latency_s: float) -> None:
        """The primary finished with ``answer``."""
        if not self.settled:
            self.settled = True
            self._primary_ready(answer, latency_s)

    def complete_body(self, body: bytes, latency_s: float) -> None:
        """The primary's non-streaming body; it is parsed in the background, not on its path."""
        if not self.settled:
            self.settled = True
            self._runner.spawn(self._parse_body(body, latency_s))

    def complete_stream(self, latency_s: float) -> None:
        """The primary's stream ended cleanly; a stream that carried an error is abandoned."""
        capture = self._capture
        if capture is None or capture.failed:
            self.abandon()
        else:
            # A truncated capture still compares: similarity reads only the first 2,000 words.
            self.complete(capture.answer(), latency_s)

    def feed(self, chunk: bytes) -> None:
        """A chunk of the primary's SSE stream, as relayed (after it was written to the agent)."""
        if self.settled:
            return
        try:
            if self._capture is None:
                self._capture = SseCapture()
            self._capture.feed(chunk)
        except Exception as exc:  # a capture bug costs this sample, never the stream
            log.warning("shadow_capture_failed", shadow_release=self.key[1], error=repr(exc))
            self.abandon()

    def abandon(self) -> None:
        """The primary failed or its client went away: nothing to compare with."""
        if not self.settled:
            self.settled = True
            self._give_up()

    async def _parse_body(self, body: bytes, latency_s: float) -> None:
        try:
            answer = answer_from_completion(body)
        except ValueError:
            log.warning("shadow_primary_unreadable", shadow_release=self.key[1])
            self._give_up()
            return
        self._primary_ready(answer, latency_s)

    def _primary_ready(self, answer: Answer, latency_s: float) -> None:
        self.primary = (answer, latency_s)
        if self.task is None or self.task.done():
            self._runner.finish(self)  # the shadow is back (or failed): compare now

    def _give_up(self) -> None:
        self.abandoned = True
        if self.task is not None and not self.task.done():
            self.task.cancel()  # its provider call is closed at once; the task counts it
        else:
            self.count("abandoned")

    def count(self, outcome: Outcome) -> bool:
        """Count this probe's outcome, once; False when it was counted already."""
        if self._counted:
            return False
        self._counted = True
        self._runner.outcome(self.key[1], outcome)
        return True
