"""Which release issued each provider-held state id: etcd's view plus the local writes not yet
confirmed, like the pin table (sidecar.pins.table) and fed by the same watch.

Pure state, no I/O. Records are small and leased like pins: written once when a provider issues
an id (a Responses answer's id), re-attached to a fresh lease when a continuation uses one (so
an id lives ``--pin-ttl`` after its last use), deleted when the agent deletes the response.
etcd is the authority: a watch event replaces whatever this sidecar had for that id.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from holdfast.keyspace import KeyError_, Keyspace, RecordError, StateOwner
from holdfast.logs import get_logger
from holdfast.store import Change, KeyValue

log = get_logger(__name__)


@dataclass(slots=True, kw_only=True)
class StateEntry:
    """One id's owner. ``mod_revision`` 0: written only locally so far; ``pending``: a write
    (or, when ``deleted``, a delete) of this entry is owed to etcd."""

    owner: StateOwner
    mod_revision: int = 0
    lease: int = 0
    pending: bool = False
    deleted: bool = False


class StateTable:
    def __init__(self, keyspace: Keyspace, agent: str) -> None:
        self._keyspace = keyspace
        self._agent = agent
        self._prefix = keyspace.state_owners_of(agent)
        self._entries: dict[str, StateEntry] = {}
        self.rejected = 0
        self.version = 0  # bumped on every change, so the saver knows when it is dirty
        self._pending_listeners: list[Callable[[str], None]] = []
        self._adopted_listeners: list[Callable[[str], None]] = []

    @property
    def prefix(self) -> str:
        return self._prefix

    def accepts(self, key: str) -> bool:
        return key.startswith(self._prefix)

    def on_pending(self, listener: Callable[[str], None]) -> None:
        """``listener(id)`` runs whenever an entry becomes pending (the writer's queue)."""
        self._pending_listeners.append(listener)

    def on_adopted(self, listener: Callable[[str], None]) -> None:
        """``listener(id)`` runs whenever etcd's record of an id arrives (lookups waiting)."""
        self._adopted_listeners.append(listener)

    def get(self, state_id: str) -> StateOwner | None:
        entry = self._entries.get(state_id)
        return entry.owner if entry is not None and not entry.deleted else None

    def entry(self, state_id: str) -> StateEntry | None:
        return self._entries.get(state_id)

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> Iterator[tuple[str, StateEntry]]:
        return iter(tuple(self._entries.items()))

    # -- local changes (request path) ------------------------------------------------------

    def record(self, owner: StateOwner) -> None:
        """An id issued (or first used) here: the writer takes it to etcd."""
        held = self._entries.get(owner.id)
        if held is not None and not held.deleted and held.owner.release == owner.release:
            return  # known already (a conversation used again)
        self._entries[owner.id] = StateEntry(owner=owner)
        self._mark(owner.id)

    def touch(self, state_id: str, now: float, refresh_s: float) -> None:
        """A continuation used the id: re-attach it to a fresh lease once per refresh interval."""
        entry = self._entries.get(state_id)
        if entry is None or entry.deleted or entry.pending:
            return
        if now - max(entry.owner.touched_at, entry.owner.issued_at) >= refresh_s:
            entry.owner = replace(entry.owner, touched_at=now)
            self._mark(state_id)

    def drop(self, state_id: str) -> None:
        """The provider deleted the state: delete its record too."""
        entry = self._entries.get(state_id)
        if entry is not None and not entry.deleted:
            entry.deleted = True
            self._mark(state_id)

    def _mark(self, state_id: str) -> None:
        entry = self._entries[state_id]
        entry.pending = True
        self.version += 1
        for listener in self._pending_listeners:
            listener(state_id)

    # -- results of this sidecar's own writes ----------------------------------------------

    def written(
        self, state_id: str, owner: StateOwner, deleted: bool, revision: int, lease: int
    ) -> None:
        """A write of ``owner`` (or its delete) landed; a change made meanwhile stays pending."""
        entry = self._entries.get(state_id)
        if entry is None or entry.owner is not owner or entry.deleted is not deleted:
            return
        if entry.deleted:
            del self._entries[state_id]
        else:
            entry.mod_revision, entry.lease, entry.pending = revision, lease, False
        self.version += 1

    # -- etcd's view (watch and listing) ---------------------------------------------------

    def adopt(self, kv: KeyValue, *, newer_only: bool = False) -> StateOwner | None:
        """Take etcd's record for a key; a bad record is refused (None) and the previous kept."""
        state_id = kv.key[len(self._prefix) :]
        held = self._entries.get(state_id)
        if newer_only and held is not None and held.mod_revision >= kv.mod_revision:
            return held.owner
        try:
            owner = self._decode(kv)
        except (RecordError, KeyError_) as exc:
            self.rejected += 1
            log.warning(
                "state_record_rejected", key=kv.key, revision=kv.mod_revision, reason=str(exc)
            )
            return None
        self._entries[state_id] = StateEntry(
            owner=owner, mod_revision=kv.mod_revision, lease=kv.lease
        )
        self.version += 1
        for listener in self._adopted_listeners:
            listener(state_id)
        return owner

    def forget(self, key: str) -> None:
        state_id = key[len(self._prefix) :]
        entry = self._entries.get(state_id)
        if entry is not None and not entry.pending:
            del self._entries[state_id]
            self.version += 1

    def apply_changes(self, changes: Sequence[Change]) -> None:
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
        """etcd's listing replaces the local entries; a pending local one stays (queued again)."""
        mine = {key: kv for key, kv in kvs.items() if self.accepts(key)}
        listed = {key[len(self._prefix) :] for key in mine}
        for state_id, entry in tuple(self._entries.items()):
            if state_id in listed:
                continue
            if entry.pending:
                entry.mod_revision = 0
                self._mark(state_id)
            else:
                del self._entries[state_id]
        for kv in mine.values():
            self.adopt(kv)
        self.version += 1

    def load(self, entries: Iterable[StateEntry]) -> None:
        """Entries saved by a previous run of this sidecar; pending ones are queued again."""
        for entry in entries:
            if entry.owner.agent != self._agent:
                continue
            self._entries[entry.owner.id] = replace(entry)
            if entry.pending:
                self._mark(entry.owner.id)
        self.version += 1

    def _decode(self, kv: KeyValue) -> StateOwner:
        parsed = self._keyspace.parse(kv.key)
        owner = StateOwner.decode(kv.value)
        if parsed.kind != "responses" or (owner.agent, owner.id) != parsed.parts:
            raise RecordError(f"state record names {owner.agent}/{owner.id:.140}")
        return owner
