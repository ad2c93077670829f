"""Session pins as an operator sees them: list, show, and deliberate migration.

Pins are written by sidecars under their leases. A migration rewrites a pin in place with a
compare-and-swap on its mod_revision and the SAME lease, so the session keeps its expiry and a
sidecar that touched the pin meanwhile wins: the pin is re-read and migrated again only if it is
still on the source release. Batches of at most ``BATCH`` pins share one transaction with one
pending audit entry, so every migrated pin is covered by an audit record written atomically
with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from configsvc import errors
from configsvc.releases import ConfigService, store_read
from holdfast import bucketing
from holdfast.keyspace import AuditEntry, Pin, RecordError
from holdfast.logs import get_logger
from holdfast.store import CasConflict, KeyValue, LeaseNotFound, Put

log = get_logger(__name__)

BATCH: Final = 50
MAX_BATCH_ATTEMPTS: Final = 5
MAX_AUDITED_SESSIONS: Final = 100
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class StoredPin:
    pin: Pin
    kv: KeyValue

    def to_json(self) -> dict[str, Any]:
        return {**self.pin.public(), "mod_revision": self.kv.mod_revision, "lease": self.kv.lease}


@dataclass(frozen=True, slots=True, kw_only=True)
class Selection:
    """Which pins a migration moves: those on ``source`` (None: on anything but ``target``)."""

    agent: str
    target: str
    source: str | None = None
    session: str = ""
    percent: float | None = None

    def wants(self, pin: Pin) -> bool:
        if pin.agent != self.agent or pin.release == self.target:
            return False
        if self.source is not None and pin.release != self.source:
            return False
        if self.session and pin.session != self.session:
            return False
        return self.percent is None or bucketing.selected(
            bucketing.MIGRATE, self.agent, pin.session, self.percent
        )


@dataclass(slots=True)
class Migration:
    migrated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    revisions: list[int] = field(default_factory=list)

    def to_json(self, selection: Selection) -> dict[str, Any]:
        return {
            "agent": selection.agent,
            "from": selection.source,
            "to": selection.target,
            "percent": selection.percent,
            "migrated": len(self.migrated),
            "skipped": len(self.skipped),
            "sessions": self.migrated[:MAX_AUDITED_SESSIONS],
            "revisions": self.revisions,
        }


def decode_pins(kvs: Iterable[KeyValue]) -> list[StoredPin]:
    found: list[StoredPin] = []
    for kv in kvs:
        try:
            found.append(StoredPin(Pin.decode(kv.value), kv))
        except RecordError as exc:
            log.warning("pin_unreadable", key=kv.key, error=str(exc))
    return found


class PinOps:
    def __init__(self, service: ConfigService) -> None:
        self.service = service

    async def require_agent(self, agent: str) -> None:
        """AgentNotFound for an agent without a route (no sidecar can have pinned anything),
        as canary, switch, shadow and rollouts say; not an empty list or a missing pin."""
        await self.service.get_route(agent)

    async def list_pins(self, agent: str) -> tuple[int, list[StoredPin]]:
        prefix = self.service.keyspace.pins_of(agent)
        revision, kvs = await store_read(self.service.store.list_prefix(prefix))
        return revision, decode_pins(kvs)

    async def show(self, agent: str, session: str) -> StoredPin:
        kv = await store_read(self.service.store.get(self.service.keyspace.pin(agent, session)))
        pins = decode_pins([kv]) if kv is not None else []
        if not pins:
            raise errors.PinNotFound(
                f"agent {agent!r} has no pin for session {session!r} (never seen, or expired)"
            )
        return pins[0]

    async def migrate(
        self, selection: Selection, actor: str, reason: str, *, action: str = "pins.migrate"
    ) -> Migration:
        _, pins = await self.list_pins(selection.agent)
        chosen = [p for p in pins if selection.wants(p.pin)]
        if selection.session and not chosen:
            await self._explain_missing(selection)
        result = Migration()
        for start in range(0, len(chosen), BATCH):
            await self._batch(
                chosen[start : start + BATCH], selection, actor, reason, action, result
            )
        log.info(
            "pins_migrated",
            agent=selection.agent,
            source=selection.source,
            target=selection.target,
            migrated=len(result.migrated),
            skipped=len(result.skipped),
            actor=actor,
        )
        return result

    async def _batch(
        self,
        batch: Sequence[StoredPin],
        selection: Selection,
        actor: str,
        reason: str,
        action: str,
        result: Migration,
    ) -> None:
        todo = list(batch)
        for attempt in range(MAX_BATCH_ATTEMPTS):
            if not todo:
                return
            now = self.service.clock()
            puts = [
                Put(
                    p.kv.key,
                    p.pin.migrated(selection.target, actor=actor, now=now).encode(),
                    expected_mod_revision=p.kv.mod_revision,
                    lease=p.kv.lease,
                )
                for p in todo
            ]
            entry = self._entry(todo, selection, actor, reason, action)
            try:
                revision = await self.service.audit.write(
                    puts,
                    entry,
                    check=f"`holdfastctl pins list {selection.agent}` and `holdfastctl history`",
                    retryable=(CasConflict, LeaseNotFound),
                )
            except (CasConflict, LeaseNotFound) as exc:
                log.info(
                    "pins_migrate_retry", agent=selection.agent, attempt=attempt + 1, error=str(exc)
                )
                todo = await self._reread(todo, selection, result)
                continue
            except errors.WriteOutcomeUnknown as exc:
                raise errors.WriteOutcomeUnknown(
                    f"{exc} ({len(result.migrated)} pin(s) were migrated before this batch of "
                    f"{len(todo)})"
                ) from exc
            result.migrated.extend(p.pin.session for p in todo)
            result.revisions.append(revision)
            return
        log.warning("pins_migrate_gave_up", agent=selection.agent, sessions=len(todo))
        result.skipped.extend(p.pin.session for p in todo)

    async def _reread(
        self, todo: Sequence[StoredPin], selection: Selection, result: Migration
    ) -> list[StoredPin]:
        """The pins of a conflicting batch as they are now; gone or moved ones are skipped."""
        fresh: list[StoredPin] = []
        for p in todo:
            kv = await store_read(self.service.store.get(p.kv.key))
            now = decode_pins([kv]) if kv is not None else []
            if now and selection.wants(now[0].pin):
                fresh.append(now[0])
            else:  # its lease expired, or someone else moved it: not ours to touch any more
                result.skipped.append(p.pin.session)
        return fresh

    def _entry(
        self,
        todo: Sequence[StoredPin],
        selection: Selection,
        actor: str,
        reason: str,
        action: str,
    ) -> AuditEntry:
        sessions = [p.pin.session for p in todo]
        sources = sorted({p.pin.release for p in todo})
        return AuditEntry(
            actor=actor,
            action=action,
            target=f"pins/{selection.agent}",
            at=self.service.clock(),
            reason=reason,
            before={"release": ",".join(sources)},
            after={"release": selection.target},
            extra={
                "agent": selection.agent,
                "count": len(sessions),
                "sessions": sessions[:MAX_AUDITED_SESSIONS],
                "sessions_truncated": len(sessions) > MAX_AUDITED_SESSIONS,
                "percent": selection.percent,
            },
        )

    async def _explain_missing(self, selection: Selection) -> None:
        found = await self.show(selection.agent, selection.session)  # PinNotFound if none
        if found.pin.release == selection.target:
            why = f"is on {selection.target!r} already"
        elif selection.source is not None and found.pin.release != selection.source:
            why = f"is pinned to {found.pin.release!r}, not {selection.source!r}"
        else:
            why = f"is not among the {selection.percent:g}% selected"
        raise errors.Conflict(
            f"session {selection.session!r} {why}; nothing was migrated", param="session"
        )
