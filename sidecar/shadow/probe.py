"""One sampled request of shadow traffic: where the primary's answer meets the shadow's.

The primary hands over its answer (or gives up) here; the runner (``sidecar.shadow``) owns the
shadow call, and compares once both sides are in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Literal, Protocol

from holdfast import dialects
from holdfast.compare import Answer, AnswerError, from_answer
from holdfast.logs import get_logger
from sidecar.shadow.book import StatsKey
from sidecar.shadow.capture import StreamCapture

log = get_logger(__name__)

Outcome = Literal["compared", "skipped_busy", "skipped_budget", "error", "abandoned"]


class Owner(Protocol):
    """What a probe tells the runner that owns its shadow call (sidecar.shadow.runner)."""

    def finish(self, probe: Probe) -> None:
        """Both sides are in (or the shadow failed): compare."""
        ...

    def outcome(self, shadow_release: str, outcome: Outcome) -> None: ...


class Probe:
    """One sampled request: the meeting point of the primary's answer and the shadow's.

    The primary calls exactly one of ``complete``, ``complete_answer``, ``complete_stream`` or
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

    def __init__(self, runner: Owner, key: StatsKey) -> None:
        self._runner = runner
        self.key = key
        self.settled = False  # the primary finished, one way or the other
        self.abandoned = False  # ... without an answer to compare
        self.primary: tuple[Answer, float] | None = None
        self.shadow: tuple[Answer, float] | None = None
        self.task: asyncio.Task[None] | None = None
        self._counted = False
        self._capture: StreamCapture | None = None

    def complete(self, answer: Answer, latency_s: float) -> None:
        """The primary finished with ``answer``."""
        if not self.settled:
            self.settled = True
            self._primary_ready(answer, latency_s)

    def complete_answer(self, answer: dialects.Answer, latency_s: float) -> None:
        """The primary's whole answer, as its dialect decoded it for every filter."""
        if self.settled:
            return
        try:
            compared = from_answer(answer)
        except AnswerError:
            log.warning("shadow_primary_unreadable", shadow_release=self.key[1])
            self.abandon()
            return
        self.complete(compared, latency_s)

    def complete_stream(self, latency_s: float) -> None:
        """The primary's stream ended cleanly; a stream that carried an error is abandoned."""
        capture = self._capture
        if capture is None or capture.failed:
            self.abandon()
        else:
            # A truncated capture still compares: similarity reads only the first 2,000 words.
            self.complete(capture.answer(), latency_s)

    def feed(self, view: dialects.EventView) -> None:
        """One event of the primary's stream, as relayed."""
        if self.settled:
            return
        try:
            if self._capture is None:
                self._capture = StreamCapture()
            self._capture.feed(view)
        except Exception as exc:  # a capture bug costs this sample, never the stream
            log.warning("shadow_capture_failed", shadow_release=self.key[1], error=repr(exc))
            self.abandon()

    def end(self, calls: Sequence[dialects.ToolCall]) -> None:
        """The primary's stream ended whole: the calls still open are complete."""
        if not self.settled and self._capture is not None:
            self._capture.calls(calls)

    def abandon(self) -> None:
        """The primary failed or its client went away: nothing to compare with."""
        if not self.settled:
            self.settled = True
            self._give_up()

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
