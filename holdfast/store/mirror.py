"""Exact key ranges of etcd, mirrored in memory and fanned out to in-process subscribers.

The mirror lists its ranges at one revision R (one read), then watches each range from R+1, every
watch a watch id on the store's one watch stream. Each range keeps its own revision: a broken
stream resumes every range from its own last applied revision + 1; a compacted range (and any
other whose next revision was compacted away) is listed again, and only those ranges' keys are
replaced. Within a range each revision is applied once and in order, whatever the reconnects in
between. Across ranges no order is promised (etcd may deliver a catching-up range's older
revision after another range's newer one); the mirror's ``revision`` is the newest applied in any
range and never goes down.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from holdfast.logs import get_logger
from holdfast.store import punctuality
from holdfast.store.errors import Compacted, StoreError, StoreUnavailable
from holdfast.store.liveness import ProbeResult, Verdict, judge_probe
from holdfast.store.mirror_state import KeyFilter, MirrorUpdate, apply_batch, build_state
from holdfast.store.protocol import Store
from holdfast.store.types import MAX_RANGES_PER_READ, Change, KeyRange, KeyValue, check_disjoint

__all__ = ["KeyFilter", "MirrorUpdate", "PrefixMirror", "RangeMirror", "apply_batch", "build_state"]

log = get_logger(__name__)


class RangeMirror:
    """The in-memory copy of a set of disjoint key ranges; one per process, many subscribers."""

    def __init__(
        self,
        store: Store,
        ranges: Sequence[KeyRange],
        *,
        key_filter: KeyFilter | None = None,
        retry_initial: float = 0.2,
        retry_max: float = 5.0,
        probe_interval: float | None = 2.0,
    ) -> None:
        """``probe_interval``: seconds between liveness reads of the store; None: no probe of
        its own, for a mirror that shares its store (and so its watch stream, which the store
        fails over as a whole) with a mirror that probes."""
        if not ranges:
            raise ValueError("a mirror needs at least one key range")
        check_disjoint(ranges)
        self._store = store
        self._ranges = tuple(ranges)
        self._label = ",".join(str(r) for r in self._ranges)
        self._filter = key_filter
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._probe_interval = probe_interval
        self._delay = retry_initial
        self._state: dict[str, KeyValue] = {}
        self._revisions = [0] * len(self._ranges)  # per range: the last revision applied
        self._revision = 0
        self._subscribers: dict[object, Callable[[MirrorUpdate], None]] = {}
        self._synced = asyncio.Event()
        self._connected = False
        self._watching = False
        self._established: set[int] = set()
        self._watch_endpoint = ""
        self._broken = False
        self._last_contact: float | None = None
        self._resyncs = 0
        self._reconnects = 0
        self._heard = 0  # responses of the watch stream (events, progress), for the probe
        self._probes_excused = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stream: asyncio.Task[None] | None = None

    @property
    def ranges(self) -> tuple[KeyRange, ...]:
        return self._ranges

    @property
    def revision(self) -> int:
        return self._revision

    def range_revisions(self) -> dict[str, int]:
        """Each range's last applied revision (they differ: each follows its own changes)."""
        return {str(r): rev for r, rev in zip(self._ranges, self._revisions, strict=True)}

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def last_contact(self) -> float | None:
        return self._last_contact

    @property
    def resyncs(self) -> int:
        return self._resyncs

    @property
    def reconnects(self) -> int:
        return self._reconnects

    @property
    def probes_excused(self) -> int:
        """Failed probes that did not restart the watch: the process's own loop was starved,
        or the watch stream kept delivering (see ``holdfast.store.liveness``)."""
        return self._probes_excused

    @property
    def state(self) -> Mapping[str, KeyValue]:
        return MappingProxyType(self._state)

    def subscribe(self, callback: Callable[[MirrorUpdate], None]) -> Callable[[], None]:
        """Call ``callback`` for every update, in order. A subscriber that arrives after the
        first sync gets the current state as a reset at once, so it never starts empty."""
        token = object()  # by identity: equal callbacks must not unsubscribe each other
        self._subscribers[token] = callback
        if self._synced.is_set():
            self._deliver(callback, MirrorUpdate(self._revision, True, self.state, ()))

        def unsubscribe() -> None:
            self._subscribers.pop(token, None)

        return unsubscribe

    async def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [asyncio.create_task(self._run(), name=f"mirror {self._label}")]
        if self._probe_interval is not None:
            self._tasks.append(
                asyncio.create_task(self._probe(self._probe_interval), name=f"probe {self._label}")
            )

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._connected = self._watching = False

    async def wait_synced(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 - agreed API
        try:
            await asyncio.wait_for(self._synced.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _deliver(self, callback: Callable[[MirrorUpdate], None], update: MirrorUpdate) -> None:
        try:
            callback(update)
        except Exception:
            log.exception("mirror_subscriber_failed", ranges=self._label, revision=update.revision)

    def _emit(self, update: MirrorUpdate) -> None:
        for callback in tuple(self._subscribers.values()):
            self._deliver(callback, update)

    def _touch(self) -> None:
        self._last_contact = time.monotonic()

    async def _run(self) -> None:
        stale = set(range(len(self._ranges)))  # ranges to list (again)
        while True:
            try:
                if stale:
                    await self._relist(sorted(stale))
                    stale = set()
                await self._follow()
            except Compacted as exc:
                # Compaction is store-wide: every range whose next revision is older is gone too.
                stale = {
                    i for i, rev in enumerate(self._revisions) if rev + 1 < exc.compact_revision
                } or set(range(len(self._ranges)))
                log.warning(
                    "watch_compacted_resync",
                    ranges=",".join(str(self._ranges[i]) for i in sorted(stale)),
                    revision=self._revision,
                    compact_revision=exc.compact_revision,
                )
            except Exception as exc:
                self._connected = False
                self._broken = True
                if not isinstance(exc, StoreError):
                    log.exception("mirror_failed", ranges=self._label)
                delay = self._delay * random.uniform(0.5, 1.0)
                self._delay = min(self._delay * 2, self._retry_max)
                log.warning(
                    "watch_broken",
                    ranges=self._label,
                    revision=self._revision,
                    error=str(exc),
                    retry_in=round(delay, 2),
                )
                await asyncio.sleep(delay)

    async def _relist(self, which: list[int]) -> None:
        """List ``which`` ranges at one revision and replace their keys (the others keep
        theirs); subscribers get the whole new state as a reset."""
        revision, listed = 0, []
        for at in range(0, len(which), MAX_RANGES_PER_READ):
            chunk = [self._ranges[i] for i in which[at : at + MAX_RANGES_PER_READ]]
            revision, part = await self._store.list_ranges(chunk)
            listed += part
        self._touch()
        first = not self._synced.is_set()
        replaced = [self._ranges[i] for i in which]
        # A new dict, not a mutated one: views handed out earlier keep the state they showed.
        kept = {k: kv for k, kv in self._state.items() if not any(r.contains(k) for r in replaced)}
        for kvs in listed:
            kept.update(build_state(kvs, self._filter))
        self._state = kept
        for i in which:
            self._revisions[i] = max(self._revisions[i], revision)
        self._revision = max(self._revision, revision)
        if not first:
            self._resyncs += 1
        self._emit(MirrorUpdate(self._revision, True, self.state, ()))
        self._synced.set()
        log.info(
            "mirror_synced",
            ranges=",".join(str(r) for r in replaced),
            revision=revision,
            keys=len(self._state),
        )

    async def _follow(self) -> None:
        stream = asyncio.create_task(self._pump())
        self._stream = stream
        try:
            await stream
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            raise StoreUnavailable("the liveness probe restarted the watch") from None
        finally:
            self._stream = None
            self._watching = False

    async def _pump(self) -> None:
        """One watch per range; their batches are applied here, one at a time, as they come."""
        queue: asyncio.Queue[tuple[int, list[Change]] | BaseException] = asyncio.Queue()
        self._established = set()
        consumers = [
            asyncio.create_task(self._consume(i, self._revisions[i] + 1, queue))
            for i in range(len(self._ranges))
        ]
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                self._apply(*item)
        finally:
            for task in consumers:
                task.cancel()
            await asyncio.gather(*consumers, return_exceptions=True)

    async def _consume(
        self,
        index: int,
        from_revision: int,
        queue: asyncio.Queue[tuple[int, list[Change]] | BaseException],
    ) -> None:
        def progress(revision: int) -> None:
            self._on_progress(index, revision)

        try:
            watch = self._store.watch(self._ranges[index], from_revision, on_progress=progress)
            async with contextlib.aclosing(watch) as batches:
                async for batch in batches:
                    queue.put_nowait((index, batch))
            queue.put_nowait(StoreUnavailable("the watch ended"))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            queue.put_nowait(exc)

    def _on_progress(self, index: int, revision: int) -> None:
        self._touch()
        self._heard += 1
        self._established.add(index)
        if self._watching or len(self._established) < len(self._ranges):
            return
        self._watching = self._connected = True
        self._delay = self._retry_initial
        self._watch_endpoint = self._store.endpoint
        if self._broken:
            self._broken = False
            self._reconnects += 1
            log.info(
                "watch_resumed",
                ranges=self._label,
                from_revision=min(self._revisions) + 1,
                endpoint=self._watch_endpoint,
            )

    def _apply(self, index: int, batch: Sequence[Change]) -> None:
        self._touch()
        self._heard += 1
        before = self._revisions[index]
        revision, kept = apply_batch(self._state, before, batch, self._filter)
        if revision == before:
            return
        self._revisions[index] = revision
        self._revision = max(self._revision, revision)
        if kept:
            self._emit(MirrorUpdate(self._revision, False, self.state, tuple(kept)))

    def _restart_watch(self, reason: str) -> None:
        if self._watching and self._stream is not None and not self._stream.done():
            log.warning("watch_restart", ranges=self._label, reason=reason)
            self._stream.cancel()

    async def _probe(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        clock = punctuality.acquire()
        excused = 0  # failed probes excused in a row
        try:
            while True:
                due = loop.time() + interval
                await asyncio.sleep(interval)
                heard = self._heard
                failure: StoreError | None = None
                try:
                    await self._store.revision()
                except StoreError as exc:
                    failure = exc
                result = ProbeResult(
                    failed=failure is not None,
                    elapsed=loop.time() - due,
                    loop_late=clock.late_since(due),
                    stream_heard=self._heard != heard,
                )
                verdict = judge_probe(result, excused)
                if verdict is Verdict.EXCUSED:
                    # A starved process that restarted its watches now would add a create per
                    # range and a relist to the load that starved it: wait for a fair probe.
                    excused += 1
                    self._probes_excused += 1
                    log.info(
                        "etcd_probe_excused",
                        ranges=self._label,
                        error=str(failure),
                        loop_late_s=round(result.loop_late, 3),
                        elapsed_s=round(result.elapsed, 3),
                        stream_heard=result.stream_heard,
                    )
                    continue
                excused = 0
                if failure is not None:
                    if self._connected:
                        log.warning("etcd_probe_failed", ranges=self._label, error=str(failure))
                    self._connected = False
                    self._restart_watch("probe failed")
                    continue
                if not self._watching:
                    continue
                self._touch()
                self._connected = True
                # The probe failed over to another endpoint: the watch's may be hanging silently.
                if self._store.endpoint != self._watch_endpoint:
                    self._restart_watch("endpoint changed")
        finally:
            punctuality.release(clock)


class PrefixMirror(RangeMirror):
    """A mirror of one prefix."""

    def __init__(
        self,
        store: Store,
        prefix: str,
        *,
        key_filter: KeyFilter | None = None,
        retry_initial: float = 0.2,
        retry_max: float = 5.0,
        probe_interval: float | None = 2.0,
    ) -> None:
        super().__init__(
            store,
            [KeyRange.prefix(prefix)],
            key_filter=key_filter,
            retry_initial=retry_initial,
            retry_max=retry_max,
            probe_interval=probe_interval,
        )
