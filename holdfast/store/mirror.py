"""One etcd watch on a prefix, mirrored in memory and fanned out to in-process subscribers.

The mirror lists the prefix at revision R, then watches from R+1. A broken stream resumes from
the last applied revision + 1; a compacted one re-lists and replaces the whole state. Each
revision is applied once and in order, whatever the reconnects in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from holdfast.logs import get_logger
from holdfast.store.errors import Compacted, StoreError, StoreUnavailable
from holdfast.store.protocol import Store
from holdfast.store.types import Change, KeyValue, kv_from_change

log = get_logger(__name__)

KeyFilter = Callable[[str], bool]


@dataclass(frozen=True)
class MirrorUpdate:
    """What subscribers get. ``kvs`` is a read-only live view of the mirror's state: it is
    exact during the callback; copy it (``dict(update.kvs)``) to keep a snapshot."""

    revision: int
    reset: bool  # True: ``kvs`` is a whole new state that replaces the old one atomically
    kvs: Mapping[str, KeyValue]
    changes: Sequence[Change]  # empty on reset


def build_state(
    kvs: Iterable[KeyValue], key_filter: KeyFilter | None = None
) -> dict[str, KeyValue]:
    return {kv.key: kv for kv in kvs if key_filter is None or key_filter(kv.key)}


def apply_batch(
    state: dict[str, KeyValue],
    last_revision: int,
    batch: Sequence[Change],
    key_filter: KeyFilter | None = None,
) -> tuple[int, list[Change]]:
    """Apply the changes of one etcd revision to ``state`` in place.

    Returns the new last revision and the changes that passed the filter. A batch at or below
    ``last_revision`` was applied already (a replay after a reconnect): it is ignored whole.
    """
    if not batch:
        return last_revision, []
    revision = batch[0].mod_revision
    if any(change.mod_revision != revision for change in batch):
        raise ValueError(f"a batch must hold one revision: {[c.mod_revision for c in batch]}")
    if revision <= last_revision:
        return last_revision, []
    kept = [c for c in batch if key_filter is None or key_filter(c.key)]
    for change in kept:
        if change.kind == "put":
            state[change.key] = kv_from_change(change)
        else:
            state.pop(change.key, None)
    return revision, kept


class PrefixMirror:
    """The in-memory copy of one etcd prefix; one per process, many subscribers."""

    def __init__(
        self,
        store: Store,
        prefix: str,
        *,
        key_filter: KeyFilter | None = None,
        retry_initial: float = 0.2,
        retry_max: float = 5.0,
        probe_interval: float = 2.0,
    ) -> None:
        self._store = store
        self._prefix = prefix
        self._filter = key_filter
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._probe_interval = probe_interval
        self._delay = retry_initial
        self._state: dict[str, KeyValue] = {}
        self._revision = 0
        self._subscribers: dict[object, Callable[[MirrorUpdate], None]] = {}
        self._synced = asyncio.Event()
        self._connected = False
        self._watching = False
        self._watch_endpoint = ""
        self._broken = False
        self._last_contact: float | None = None
        self._resyncs = 0
        self._reconnects = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stream: asyncio.Task[None] | None = None

    @property
    def revision(self) -> int:
        return self._revision

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
        self._tasks = [
            asyncio.create_task(self._run(), name=f"mirror {self._prefix}"),
            asyncio.create_task(self._probe(), name=f"mirror probe {self._prefix}"),
        ]

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
            log.exception("mirror_subscriber_failed", prefix=self._prefix, revision=update.revision)

    def _emit(self, update: MirrorUpdate) -> None:
        for callback in tuple(self._subscribers.values()):
            self._deliver(callback, update)

    def _touch(self) -> None:
        self._last_contact = time.monotonic()

    async def _run(self) -> None:
        listed = False
        while True:
            try:
                if not listed:
                    await self._relist()
                    listed = True
                await self._follow()
            except Compacted as exc:
                log.warning(
                    "watch_compacted_resync",
                    prefix=self._prefix,
                    revision=self._revision,
                    compact_revision=exc.compact_revision,
                )
                listed = False
            except Exception as exc:
                self._connected = False
                self._broken = True
                if not isinstance(exc, StoreError):
                    log.exception("mirror_failed", prefix=self._prefix)
                delay = self._delay * random.uniform(0.5, 1.0)
                self._delay = min(self._delay * 2, self._retry_max)
                log.warning(
                    "watch_broken",
                    prefix=self._prefix,
                    revision=self._revision,
                    error=str(exc),
                    retry_in=round(delay, 2),
                )
                await asyncio.sleep(delay)

    async def _relist(self) -> None:
        revision, kvs = await self._store.list_prefix(self._prefix)
        self._touch()
        first = not self._synced.is_set()
        # A new dict, not a mutated one: views handed out earlier keep the state they showed.
        self._state = build_state(kvs, self._filter)
        self._revision = revision
        if not first:
            self._resyncs += 1
        self._emit(MirrorUpdate(revision, True, self.state, ()))
        self._synced.set()
        log.info("mirror_synced", prefix=self._prefix, revision=revision, keys=len(self._state))

    async def _follow(self) -> None:
        stream = asyncio.create_task(self._consume(self._revision + 1))
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

    async def _consume(self, from_revision: int) -> None:
        watch = self._store.watch(self._prefix, from_revision, on_progress=self._on_progress)
        async with contextlib.aclosing(watch) as batches:
            async for batch in batches:
                self._apply(batch)
        raise StoreUnavailable("the watch ended")

    def _on_progress(self, revision: int) -> None:
        self._touch()
        if self._watching:
            return
        self._watching = self._connected = True
        self._delay = self._retry_initial
        self._watch_endpoint = self._store.endpoint
        if self._broken:
            self._broken = False
            self._reconnects += 1
            log.info(
                "watch_resumed",
                prefix=self._prefix,
                from_revision=self._revision + 1,
                endpoint=self._watch_endpoint,
            )

    def _apply(self, batch: Sequence[Change]) -> None:
        self._touch()
        revision, kept = apply_batch(self._state, self._revision, batch, self._filter)
        if revision == self._revision:
            return
        self._revision = revision
        if kept:
            self._emit(MirrorUpdate(revision, False, self.state, tuple(kept)))

    def _restart_watch(self, reason: str) -> None:
        if self._watching and self._stream is not None and not self._stream.done():
            log.warning("watch_restart", prefix=self._prefix, reason=reason)
            self._stream.cancel()

    async def _probe(self) -> None:
        while True:
            await asyncio.sleep(self._probe_interval)
            try:
                await self._store.revision()
            except StoreError as exc:
                if self._connected:
                    log.warning("etcd_probe_failed", prefix=self._prefix, error=str(exc))
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
