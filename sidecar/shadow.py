"""Shadow traffic: send a sample of chat requests to the shadow release too, compare the answers.

The shadow call never touches the primary path: it runs in its own task, the primary only
hands over its Answer (``Probe.complete``) or gives up (``Probe.abandon``), and every shadow
failure ends here, logged and counted. Concurrency and a token budget of its own bound what
shadowing may cost; a sample that does not fit is skipped and counted, never queued.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final, Literal

from holdfast.bucketing import SHADOW, selected
from holdfast.keyspace import Release, Route, ShadowStats
from holdfast.logs import get_logger
from sidecar.compare import Answer, Comparison, answer_from_completion, compare, comparison_cost
from sidecar.errors import SidecarError
from sidecar.shadow_book import ShadowBook, StatsKey, TokenBucket
from sidecar.shadow_metrics import ShadowMetrics
from sidecar.sse_capture import SseCapture
from sidecar.upstream import Upstream

log = get_logger(__name__)

CHAT_PATH: Final = "/chat/completions"
# Above this many characters a comparison runs in a worker thread, off the event loop.
INLINE_COMPARE_CHARS: Final = 4_000
MAX_DECODED_BYTES: Final = 16 * 1024 * 1024
Outcome = Literal["compared", "skipped_busy", "skipped_budget", "error", "abandoned"]


class ShadowCallFailed(SidecarError):
    """The shadow release answered, but not with a chat completion we can compare."""


def decoded(data: bytes, encoding: str) -> bytes:
    """The body of a compressed answer (the upstream client leaves bodies as sent, for relay)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding not in ("gzip", "deflate"):
        raise ShadowCallFailed(f"shadow answer has an unsupported encoding {encoding!r:.20}")
    try:
        # wbits 47 reads zlib and gzip headers alike; the cap stops a decompression bomb.
        inflater = zlib.decompressobj(wbits=47)
        out = inflater.decompress(data, MAX_DECODED_BYTES)
    except zlib.error as exc:
        raise ShadowCallFailed("shadow answer does not decompress") from exc
    if inflater.unconsumed_tail:
        raise ShadowCallFailed("shadow answer is over the decompressed size limit")
    return out


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


class ShadowRunner:
    def __init__(
        self,
        agent: str,
        upstream: Upstream,
        metrics: ShadowMetrics,
        *,
        max_concurrency: int,
        tokens_per_minute: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.agent = agent
        self._upstream = upstream
        self._metrics = metrics
        self.max_concurrency = max_concurrency
        self.budget = TokenBucket(tokens_per_minute, clock)
        self.book = ShadowBook()
        self.in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._unknown_logged: set[str] = set()
        self._closed = False

    def stats(self) -> tuple[ShadowStats, ...]:
        return self.book.snapshot()

    def probe(
        self,
        route: Route | None,
        primary: Release,
        releases: Mapping[str, Release],
        body: Mapping[str, Any],
        request_id: str,
    ) -> Probe | None:
        """Start a shadow call for this request when the route samples it; None otherwise.

        Cheap when there is no shadow: two attribute loads and a comparison.
        """
        shadow = route.shadow if route is not None else None
        if shadow is None or shadow.release == primary.name or self._closed:
            return None
        release = releases.get(shadow.release)
        if release is None:
            if shadow.release not in self._unknown_logged:
                self._unknown_logged.add(shadow.release)
                log.warning("shadow_release_unknown", shadow_release=shadow.release)
            return None
        if not selected(SHADOW, self.agent, request_id, shadow.percent):
            return None
        probe = Probe(self, (primary.name, release.name, shadow.since))
        if self.in_flight >= self.max_concurrency:
            self.book.skipped(probe.key)
            probe.count("skipped_busy")
            return None
        if not self.budget.available():
            self.book.skipped(probe.key)
            probe.count("skipped_budget")
            return None
        self.in_flight += 1
        # A shallow copy: the primary path may go on to change its own top-level fields.
        probe.task = self.spawn(self._call(probe, release, dict(body), request_id))
        return probe

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _call(
        self, probe: Probe, release: Release, body: Mapping[str, Any], request_id: str
    ) -> None:
        started = time.perf_counter()
        try:
            try:
                answer = await self._ask(release, body, request_id)
            finally:
                self.in_flight -= 1
        except asyncio.CancelledError:
            probe.count("abandoned")
            raise
        except Exception as exc:
            reason = exc.message if isinstance(exc, SidecarError) else ""
            log.warning(
                "shadow_call_failed",
                shadow_release=release.name,
                error=type(exc).__name__,
                reason=reason,
            )
            self.book.error(probe.key)
            probe.count("error")
            return
        self.budget.charge(answer.prompt_tokens + answer.completion_tokens)
        probe.shadow = (answer, time.perf_counter() - started)
        if probe.primary is not None:
            await self._compare(probe, probe.primary, probe.shadow)
        elif probe.abandoned:
            probe.count("abandoned")
        # else the primary is still running: its completion triggers the comparison

    async def _ask(self, release: Release, body: Mapping[str, Any], request_id: str) -> Answer:
        shadow_body = {k: v for k, v in body.items() if k != "stream_options"}
        shadow_body["model"] = release.model
        shadow_body["stream"] = False
        payload = json.dumps(shadow_body, separators=(",", ":"), ensure_ascii=False).encode()
        async with self._upstream.post(
            release, CHAT_PATH, payload, stream=False, request_id=f"{request_id}-shadow"
        ) as response:
            data = await self._upstream.read_body(release, response)
            if response.status != 200:
                raise ShadowCallFailed(f"shadow release answered HTTP {response.status}")
            encoding = response.headers.get("Content-Encoding", "identity")
        try:
            return answer_from_completion(decoded(data, encoding))
        except ValueError as exc:
            raise ShadowCallFailed(f"shadow answer unreadable: {exc}") from exc

    def finish(self, probe: Probe) -> None:
        """Both sides are in (or the shadow failed): compare in the background."""
        if probe.primary is not None and probe.shadow is not None:
            self.spawn(self._compare(probe, probe.primary, probe.shadow))

    async def _compare(
        self, probe: Probe, primary_side: tuple[Answer, float], shadow_side: tuple[Answer, float]
    ) -> None:
        (primary, primary_s), (shadow, shadow_s) = primary_side, shadow_side
        try:
            result: Comparison
            if comparison_cost(primary, shadow) > INLINE_COMPARE_CHARS:
                result = await asyncio.to_thread(compare, primary, shadow)
            else:
                result = compare(primary, shadow)
        except Exception as exc:  # a comparison bug must not surface anywhere but here
            log.warning("shadow_compare_failed", shadow_release=probe.key[1], error=repr(exc))
            self.book.error(probe.key)
            probe.count("error")
            return
        self.book.compared(probe.key, result, primary, shadow, primary_s, shadow_s)
        if probe.count("compared"):
            self._metrics.compared(probe.key[1], result.similarity)

    def outcome(self, shadow_release: str, outcome: Outcome) -> None:
        self._metrics.outcome(shadow_release, outcome)

    async def close(self) -> None:
        """Cancel shadow calls still running: the process is going away, the primary is not."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
