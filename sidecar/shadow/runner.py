"""Shadow traffic: send a sample of requests to the shadow release too, compare the answers.

The shadow call never touches the primary path: it runs in its own task, the primary only
hands over its Answer (``Probe.complete``) or gives up (``Probe.abandon``), and every shadow
failure ends here, logged and counted. Concurrency and a token budget of its own bound what
shadowing may cost; a sample that does not fit is skipped and counted, never queued.

A concurrency slot is taken when the call is spawned and given back when its task ends, however
it ends -- including a task cancelled before it ever ran (the primary was refused or failed
before it went out): no slot can leak. Each shadow call carries a completion cap: the one the
primary sends (a budget may have written it), else ``default_cap``, and never more than the
shadow budget's one minute of tokens, so a single call cannot run the budget far into debt.
"""

from __future__ import annotations

import asyncio
import json
import time
import zlib
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Final

from holdfast.bucketing import SHADOW, selected
from holdfast.compare import Answer, Comparison, answer_from_completion, compare, comparison_cost
from holdfast.dialects import Dialect, RequestRefused, RequestView
from holdfast.keyspace import Release, Route, ShadowStats
from holdfast.logs import get_logger
from sidecar.errors import SidecarError
from sidecar.settings import DEFAULT_BUDGET_MAX_TOKENS
from sidecar.shadow.book import ShadowBook, TokenBucket
from sidecar.shadow.metrics import ShadowMetrics
from sidecar.shadow.probe import Outcome, Probe
from sidecar.upstream import Upstream

log = get_logger(__name__)

# Above this many characters a comparison runs in a worker thread, off the event loop.
INLINE_COMPARE_CHARS: Final = 4_000
MAX_DECODED_BYTES: Final = 16 * 1024 * 1024


class ShadowCallFailed(SidecarError):
    """The shadow release answered, but not with an answer we can compare."""


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


class ShadowRunner:
    def __init__(
        self,
        agent: str,
        upstream: Upstream,
        metrics: ShadowMetrics,
        *,
        max_concurrency: int,
        tokens_per_minute: int,
        default_cap: int = DEFAULT_BUDGET_MAX_TOKENS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.agent = agent
        self._upstream = upstream
        self._metrics = metrics
        self.max_concurrency = max_concurrency
        self.budget = TokenBucket(tokens_per_minute, clock)
        self.max_cap = tokens_per_minute
        self.default_cap = default_cap
        self.book = ShadowBook()
        self.in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._unknown_logged: set[str | tuple[str, str]] = set()
        self._closed = False

    def stats(self) -> tuple[ShadowStats, ...]:
        return self.book.snapshot()

    def probe(
        self,
        route: Route | None,
        primary: Release,
        releases: Mapping[str, Release],
        dialect: Dialect,
        request: RequestView,
        request_id: str,
        *,
        agent_headers: Mapping[str, str] | None = None,
        query: str = "",
    ) -> Probe | None:
        """Start a shadow call for this request when the route samples it; None otherwise.

        Cheap when there is no shadow: two attribute loads and a comparison. Like is compared
        with like: a shadow release of a provider kind that does not speak the request's API is
        never sent it. The shadow goes with what the primary forwards of the agent's headers
        (Anthropic's beta flags...) and its query string.
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
        if release.provider != dialect.provider_api:
            if (shadow.release, dialect.name) not in self._unknown_logged:
                self._unknown_logged.add((shadow.release, dialect.name))
                log.warning(
                    "shadow_release_other_provider",
                    shadow_release=shadow.release,
                    provider=release.provider,
                    dialect=dialect.name,
                )
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
        # A shallow copy: the primary path may go on to change its own top-level fields.
        shadow_body = self.shadow_body(release, dialect, request)
        self.in_flight += 1
        forwarded = dict(agent_headers or {})  # the agent's request ends before the call may
        call = self._call(probe, release, dialect, shadow_body, request_id, forwarded, query)
        probe.task = task = self.spawn(call)
        task.add_done_callback(lambda done: self._call_ended(probe, done))
        return probe

    def shadow_body(
        self, release: Release, dialect: Dialect, request: RequestView
    ) -> dict[str, Any]:
        """What the shadow release is asked: the primary's request, non-streaming, capped."""
        shadow_body = request.shadow_copy(release.model)
        try:
            sent, choices = request.output_cap()
        except RequestRefused:
            sent, choices = None, 1
        cap = min(sent or self.default_cap, max(1, self.max_cap // choices))
        if cap != sent:
            dialect.parse(shadow_body).write_output_cap(cap, release.base_url)
        return shadow_body

    def _call_ended(self, probe: Probe, task: asyncio.Task[None]) -> None:
        self.in_flight -= 1
        if task.cancelled():
            probe.count("abandoned")  # once: a call cancelled mid-way counted itself already

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _call(
        self,
        probe: Probe,
        release: Release,
        dialect: Dialect,
        body: Mapping[str, Any],
        request_id: str,
        agent_headers: Mapping[str, str] | None = None,
        query: str = "",
    ) -> None:
        started = time.perf_counter()
        try:
            answer = await self._ask(release, dialect, body, request_id, agent_headers, query)
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

    async def _ask(
        self,
        release: Release,
        dialect: Dialect,
        body: Mapping[str, Any],
        request_id: str,
        agent_headers: Mapping[str, str] | None = None,
        query: str = "",
    ) -> Answer:
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        async with self._upstream.post(
            release,
            dialect.upstream_path,
            payload,
            stream=False,
            request_id=f"{request_id}-shadow",
            agent_headers=agent_headers,
            query=query,
        ) as response:
            data = await self._upstream.read_body(release, response)
            if response.status != 200:
                raise ShadowCallFailed(f"shadow release answered HTTP {response.status}")
            encoding = response.headers.get("Content-Encoding", "identity")
        try:
            return answer_from_completion(decoded(data, encoding), dialect)
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
