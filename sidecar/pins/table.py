"""The sidecar's table of session pins: etcd's view plus the local writes not yet confirmed.

Pure state, no I/O. The etcd mirror feeds it ``pins/<agent>/`` key-values, the request path
reads it with one dict lookup, and the pin writer takes its pending entries to etcd. etcd is
the authority: a watch event replaces whatever this sidecar had for that session, pending or
not, so two sidecars that raced on a new session converge on the one etcd kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from holdfast.keyspace import KeyError_, Keyspace, Pin, RecordError
from holdfast.logs import get_logger
from holdfast.store import Change, KeyValue

log = get_logger(__name__)

MIN_REFRESH_INTERVAL_S: Final = 1.0
REFRESHES_PER_TTL: Final = 24


def refresh_interval(ttl: float) -> float:
    """How often a used pin is re-attached to a fresh lease (and a fresh lease granted)."""
    return max(ttl / REFRESHES_PER_TTL, MIN_REFRESH_INTERVAL_S)


@dataclass(slots=True, kw_only=True)
class PinEntry:
    """One session's pin. ``mod_revision`` 0: written only locally so far.

    ``told`` is the ``migrated_at`` of the migration this sidecar already announced to the
    agent, so that a later event carrying the same migration does not announce it again.
    ``pending``: a write of this entry to etcd is wanted (create, touch or notice).
    """

    pin: Pin
    mod_revision: int = 0
    lease: int = 0
    told: float = 0.0
    pending: bool = False

    @property
    def notice_due(self) -> bool:
        """The agent has not been told of the pin's migration by this sidecar yet."""
        return self.pin.needs_notice and self.told != self.pin.migrated_at

    @property
    def notice_unwritten(self) -> bool:
        """This sidecar told the agent but etcd does not say ``notified`` yet."""
        return self.pin.needs_notice and self.told == self.pin.migrated_at


class PinTable:
    def __init__(self, keyspace: Keyspace, agent: str) -> None:
        self._keyspace = keyspace
        self._agent = agent
        self._prefix = keyspace.pins_of(agent)
        self._entries: dict[str, PinEntry] = {}
        self.rejected = 0
        self.version = 0  # bumped on every change, so the saver knows when it is dirty
        self._listeners: list[Callable[[str], None]] = []
        self._adopted: list[Callable[[str], None]] = []

    @property
    def prefix(self) -> str:
        return self._prefix

    def accepts(self, key: str) -> bool:
        return key.startswith(self._prefix)

    def on_pending(self, listener: Callable[[str], None]) -> None:
        """``listener(session)`` runs whenever an entry becomes pending (the writer's queue)."""
        self._listeners.append(listener)

    def on_adopt(self, listener: Callable[[str], None]) -> None:
        """``listener(session)`` runs whenever etcd's record of a pin is taken (watch, listing,
        claim): e.g. an operator's migration reaching the sidecar."""
        self._adopted.append(listener)

    def get(self, session: str) -> PinEntry | None:
        return self._entries.get(session)

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> Iterator[tuple[str, PinEntry]]:
        return iter(tuple(self._entries.items()))

    # -- local changes (request path) ------------------------------------------------------

    def record_new(self, pin: Pin) -> PinEntry:
        """A pin decided here that etcd has not confirmed: the writer creates it."""
        entry = PinEntry(pin=pin)
        self._entries[pin.session] = entry
        self.mark_pending(pin.session)
        return entry

    def record_claimed(self, pin: Pin, mod_revision: int, lease: int) -> PinEntry:
        """A pin this sidecar created in etcd itself (at ``mod_revision``), unless the watch
        already brought a later version of the key."""
        entry = self._entries.get(pin.session)
        if entry is not None and entry.mod_revision >= mod_revision:
            return entry
        entry = PinEntry(pin=pin, mod_revision=mod_revision, lease=lease)
        self._entries[pin.session] = entry
        self.version += 1
        return entry

    def record_prompts(self, session: str, prompts: Mapping[str, str]) -> None:
        """Prompt versions the session used for the first time: they stay its versions."""
        entry = self._entries.get(session)
        if entry is None:
            return
        entry.pin = dataclasses.replace(entry.pin, prompts={**entry.pin.prompts, **prompts})
        self.mark_pending(session)

    def mark_told(self, session: str) -> None:
        entry = self._entries.get(session)
        if entry is not None and entry.notice_due:
            entry.told = entry.pin.migrated_at
            self.mark_pending(session)

    def mark_pending(self, session: str) -> None:
        entry = self._entries.get(session)
        if entry is not None:
            entry.pending = True
            self._queue(session)

    def _queue(self, session: str) -> None:
        self.version += 1
        for listener in self._listeners:
            listener(session)

    # -- results of this sidecar's own writes ----------------------------------------------

    def written(
        self,
        session: str,
        pin: Pin,
        expected: int,
        kv_revision: int,
        lease: int,
        source: Pin | None = None,
    ) -> None:
        """A write CAS'd on ``expected`` landed at ``kv_revision``; adopt it unless etcd's
        watch already moved the entry past it. ``source`` is the entry's pin the write was made
        from: if the entry changed locally meanwhile, that change is kept (and still queued)."""
        entry = self._entries.get(session)
        if entry is None or entry.mod_revision not in (expected, kv_revision):
            return
        if source is not None and entry.pin is not source:
            entry.mod_revision, entry.lease = kv_revision, lease
            self.version += 1
            return
        entry.pin, entry.mod_revision, entry.lease = pin, kv_revision, lease
        entry.pending = entry.notice_unwritten
        self.version += 1

    def lost(self, session: str) -> None:
        """etcd no longer has the key this entry was read from (it expired): create it again."""
        entry = self._entries.get(session)
        if entry is not None:
            entry.mod_revision = 0
            self.mark_pending(session)

    def give_up(self, session: str) -> bool:
        """The writer dropped this entry's write (queue over its bound). A dropped refresh is
        simply forgotten (the next use asks again); True when a write is still owed to etcd
        (a create, or a notice already given), which the writer then retries later."""
        entry = self._entries.get(session)
        if entry is None:
            return False
        if entry.mod_revision:
            entry.pending = entry.notice_unwritten
            self.version += 1
        return entry.pending

    # -- etcd's view (watch and listing) ---------------------------------------------------

    def adopt(self, kv: KeyValue, *, newer_only: bool = False) -> bool:
        """Take etcd's record for a key; a bad record is refused and the previous one kept.

        ``newer_only`` for a record read outside the watch (a get): the watch may already have
        brought a later version, which must not be replaced by this older one."""
        if newer_only:
            held = self._entries.get(kv.key[len(self._prefix) :])
            if held is not None and held.mod_revision >= kv.mod_revision:
                return True
        try:
            pin = self._decode(kv)
        except (RecordError, KeyError_) as exc:
            self.rejected += 1
            log.warning(
                "pin_record_rejected", key=kv.key, revision=kv.mod_revision, reason=str(exc)
            )
            return False
        old = self._entries.get(pin.session)
        entry = PinEntry(pin=pin, mod_revision=kv.mod_revision, lease=kv.lease)
        if old is not None:
            entry.told = old.told
        entry.pending = entry.notice_unwritten
        self._entries[pin.session] = entry
        self.version += 1
        if entry.pending:
            self._queue(pin.session)
        for listener in self._adopted:
            listener(pin.session)
        return True

    def forget(self, key: str) -> None:
        session = key[len(self._prefix) :]
        if self._entries.pop(session, None) is not None:
            self.version += 1

    def apply_changes(self, changes: Sequence[Change]) -> None:
        """Apply watch events (keys outside this agent's pins are ignored)."""
        for change in changes:
            if not self.accepts(change.key):
                continue
            if change.kind == "delete":
                self.forget(change.key)
            else:
                self.adopt(
                    KeyValue(
                        change.key, change.value, change.mod_revision,
                        change.create_revision, change.version, change.lease,
                    )
                )  # fmt: skip

    def apply_reset(self, kvs: Mapping[str, KeyValue]) -> None:
        """etcd's listing: its pins replace the local ones; a pending local pin that etcd does
        not have (written during an outage) stays and is queued again."""
        mine = {key: kv for key, kv in kvs.items() if self.accepts(key)}
        listed = {key[len(self._prefix) :] for key in mine}
        for session, entry in tuple(self._entries.items()):
            if session in listed:
                continue
            if entry.pending:
                entry.mod_revision = 0  # what we knew of it in etcd is gone: create it again
                self._queue(session)
            else:
                del self._entries[session]
        for kv in mine.values():
            self.adopt(kv)
        self.version += 1

    def load(self, entries: Iterable[PinEntry]) -> None:
        """Entries saved by a previous run of this sidecar; pending ones are queued again."""
        for entry in entries:
            if entry.pin.agent != self._agent:
                continue
            self._entries[entry.pin.session] = dataclasses.replace(entry)
            if entry.pending:
                self._queue(entry.pin.session)
        self.version += 1

    def _decode(self, kv: KeyValue) -> Pin:
        parsed = self._keyspace.parse(kv.key)
        pin = Pin.decode(kv.value)
        if parsed.kind != "pins" or (pin.agent, pin.session) != parsed.parts:
            raise RecordError(f"pin record names {pin.agent}/{pin.session:.140}")
        return pin
