"""Domain operations over the store: releases, routes, history. No HTTP here.

Every mutation is one etcd transaction that compare-and-swaps its target and writes a pending
audit entry (see ``configsvc.audit``). Store errors become ``ConfigsvcError``s at this boundary:
a failed read means nothing changed (StoreDown), a failed write means nobody knows
(WriteOutcomeUnknown).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, Protocol, TypeVar

from configsvc import errors
from configsvc.audit import AuditTrail, ConfigStore, HistoryItem
from configsvc.http import HistoryQuery
from configsvc.releases import route_edits as routes
from configsvc.releases.payloads import Rollback, SetAliases, SetStable
from configsvc.releases.providers import checker
from holdfast.keyspace import AuditEntry, HealthSnapshot, Keyspace, RecordError, Release, Route
from holdfast.logs import get_logger
from holdfast.store import CasConflict, KeyValue, Put, StoreError

log = get_logger(__name__)

MAX_CAS_ATTEMPTS: Final = 5
R = TypeVar("R", Release, Route)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Versioned(Generic[R]):
    record: R
    mod_revision: int


@dataclass(frozen=True, slots=True)
class RouteChange:
    route: Route
    mod_revision: int
    changed: bool
    before: Route | None

    def to_json(self) -> dict[str, Any]:
        """How every endpoint that changes a route answers."""
        return {
            "route": self.route.public(),
            "mod_revision": self.mod_revision,
            "changed": self.changed,
            "before": self.before.public() if self.before else None,
        }


# Given the current route (None: none yet), the new one; the same object means "no change".
RouteEdit = Callable[[Route | None], Route]


class AgentBeats(Protocol):
    """The newest health beats of an agent's sidecars from the replicas that own the agent
    (``configsvc.health.OwnerBeats``): beats reach configsvc over HTTP, not through etcd."""

    async def latest(self, agent: str, headers: Mapping[str, str]) -> list[HealthSnapshot]: ...

    def present(self, agent: str) -> list[HealthSnapshot]:
        """This replica's own newest snapshot of each live sidecar of ``agent``: its etcd
        presence record as this replica's watch holds it, or a beat this replica took. No etcd
        read: a listing of every sidecar's presence per call would grow with the fleet."""
        ...


class ConfigService:
    def __init__(
        self, store: ConfigStore, keyspace: Keyspace, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.keyspace = keyspace
        self.audit = AuditTrail(store, keyspace)
        self.clock = clock
        self._beats: AgentBeats | None = None
        self._beat_headers: Mapping[str, str] = {}

    def read_beats_from(self, beats: AgentBeats, headers: Mapping[str, str]) -> None:
        """Where the sidecars' traffic counts are: their beats at the agent's owner replicas
        (``headers``: this replica's own credentials for asking them)."""
        self._beats = beats
        self._beat_headers = headers

    # -- reads ---------------------------------------------------------------------------------

    async def list_releases(self, agent: str) -> tuple[int, list[Versioned[Release]]]:
        revision, kvs = await store_read(self.store.list_prefix(self.keyspace.releases_of(agent)))
        if not kvs:
            raise errors.AgentNotFound(
                f"agent {agent!r} has no releases; create one with `holdfastctl release create`"
            )
        return revision, [Versioned(_decode(Release, kv), kv.mod_revision) for kv in kvs]

    async def agent_traffic(self, agent: str) -> dict[str, int]:
        """What the agent's live sidecars counted of the requests they served, summed: per
        dialect and per dialect and feature (``HealthSnapshot.traffic``), from each sidecar's
        newest snapshot -- its beat at the agent's owner replicas, else its presence record in
        etcd (a sidecar that knows no replica publishes there) as this replica's watch holds
        it. An unreadable snapshot counts for nothing. Without a fleet view wired in, etcd is
        listed instead, and etcd down is StoreDown (nothing was changed)."""
        newest: dict[str, HealthSnapshot] = {}
        if self._beats is None:  # no fleet view here (configsvc without health): ask etcd
            _, kvs = await store_read(self.store.list_prefix(self.keyspace.kind_prefix("health")))
            for kv in kvs:
                try:
                    snapshot = HealthSnapshot.decode(kv.value)
                except RecordError:
                    continue
                if snapshot.agent == agent:
                    newest[snapshot.sidecar_id] = snapshot
        else:
            for snapshot in self._beats.present(agent):
                newest[snapshot.sidecar_id] = snapshot
            for beat in await self._beats.latest(agent, self._beat_headers):
                held = newest.get(beat.sidecar_id)
                if beat.agent == agent and (held is None or beat.at >= held.at):
                    newest[beat.sidecar_id] = beat
        total: dict[str, int] = {}
        for snapshot in newest.values():
            for name, count in snapshot.traffic.items():
                total[name] = total.get(name, 0) + count
        return total

    async def get_release(self, agent: str, release: str) -> Versioned[Release]:
        kv = await self._get(self.keyspace.release(agent, release))
        if kv is None:
            raise errors.ReleaseNotFound(f"agent {agent!r} has no release {release!r}")
        return Versioned(_decode(Release, kv), kv.mod_revision)

    async def get_route(self, agent: str) -> Versioned[Route]:
        kv = await self._get(self.keyspace.route(agent))
        if kv is None:
            raise errors.AgentNotFound(
                f"agent {agent!r} has no route; set one with `holdfastctl route set-stable`"
            )
        return Versioned(_decode(Route, kv), kv.mod_revision)

    async def history(self, query: HistoryQuery) -> tuple[int, list[HistoryItem]]:
        return await self.audit.history(agent=query.agent, limit=query.limit)

    async def finalize_pending(self) -> int:
        return await self.audit.finalize_pending()

    # -- mutations -----------------------------------------------------------------------------

    async def set_stable(self, agent: str, req: SetStable, actor: str) -> RouteChange:
        # releases are never deleted: check once
        placed = (await self.get_release(agent, req.release)).record
        check = checker(
            await self.agent_traffic(agent), placed, "stable", allow=req.allow_provider_change
        )

        def edit(current: Route | None) -> Route:
            check(current)
            return routes.with_stable(
                current, agent=agent, release=req.release, actor=actor, now=self.clock()
            )

        change = await self.update_route(
            agent, edit, actor, "route.set_stable", req.reason, if_revision=req.if_revision
        )
        if change.changed:
            log.info(
                "route_stable_changed",
                agent=agent,
                revision=change.mod_revision,
                before=change.before.stable if change.before else None,
                after=change.route.stable,
                actor=actor,
            )
        return change

    async def rollback(self, agent: str, req: Rollback, actor: str) -> RouteChange:
        def edit(current: Route | None) -> Route:
            return routes.rolled_back(current, agent=agent, actor=actor, now=self.clock())

        change = await self.update_route(agent, edit, actor, "route.rollback", req.reason)
        log.info(
            "route_rolled_back",
            agent=agent,
            revision=change.mod_revision,
            after=change.route.stable,
            actor=actor,
        )
        return change

    async def set_aliases(self, agent: str, req: SetAliases, actor: str) -> RouteChange:
        def edit(current: Route | None) -> Route:
            return routes.with_aliases(
                current, agent=agent, aliases=req.aliases, actor=actor, now=self.clock()
            )

        change = await self.update_route(agent, edit, actor, "route.set_aliases", req.reason)
        if change.changed:
            log.info(
                "route_aliases_changed",
                agent=agent,
                revision=change.mod_revision,
                aliases=list(change.route.aliases),
                actor=actor,
            )
        return change

    # -- helpers -------------------------------------------------------------------------------

    async def update_route(
        self,
        agent: str,
        edit: RouteEdit,
        actor: str,
        action: str,
        reason: str,
        *,
        if_revision: int | None = None,
        extra: dict[str, object] | None = None,
    ) -> RouteChange:
        """Read-modify-write of one route with CAS; retried unless the caller pinned a revision.

        ``extra`` goes into the audit entry beside the agent (e.g. whether a switch was probed).
        """
        key = self.keyspace.route(agent)
        for _attempt in range(MAX_CAS_ATTEMPTS):
            kv = await self._get(key)
            current = _decode(Route, kv) if kv is not None else None
            found = kv.mod_revision if kv is not None else 0
            if if_revision is not None and found != if_revision:
                raise errors.RevisionConflict(
                    _moved(agent, if_revision, found), param="if_revision"
                )
            new = edit(current)
            if new is current:
                return RouteChange(current, found, changed=False, before=current)
            before = current.public() if current is not None else None
            entry = self.audit_entry(
                actor, action, key, reason, before, new.public(), agent, extra=extra
            )
            try:
                revision = await self._write(
                    Put(key, new.encode(), expected_mod_revision=found), entry
                )
            except CasConflict as exc:
                if if_revision is not None:
                    raise errors.RevisionConflict(
                        _moved(agent, if_revision, exc.actual_mod_revision), param="if_revision"
                    ) from exc
                log.info("route_cas_retry", agent=agent, attempt=_attempt + 1)
                continue
            return RouteChange(new, revision, changed=True, before=current)
        raise errors.RevisionConflict(
            f"route of {agent!r} kept changing concurrently; nothing was written, try again"
        )

    def audit_entry(
        self,
        actor: str,
        action: str,
        key: str,
        reason: str,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        agent: str = "",
        *,
        extra: dict[str, Any] | None = None,
    ) -> AuditEntry:
        """The audit entry of one change; ``key`` is the etcd key (or keyspace path) it touches."""
        extra = {**(extra or {}), "agent": agent} if agent else dict(extra or {})
        return AuditEntry(
            actor=actor,
            action=action,
            target=key.removeprefix(self.keyspace.prefix),
            at=self.clock(),
            reason=reason,
            before=before,
            after=after,
            extra=extra,
        )

    async def _write(self, target: Put, entry: AuditEntry) -> int:
        return await self.audit.write([target], entry, check="`holdfastctl history`")

    async def _get(self, key: str) -> KeyValue | None:
        return await store_read(self.store.get(key))


async def store_read(call: Awaitable[_T]) -> _T:
    """A read whose failure means nothing was changed."""
    try:
        return await call
    except StoreError as exc:
        raise errors.StoreDown(
            f"etcd is unavailable ({exc}); nothing was changed, try again"
        ) from exc


def _decode(cls: type[R], kv: KeyValue) -> R:
    try:
        return cls.decode(kv.value)
    except RecordError as exc:
        raise errors.StoredRecordInvalid(f"stored record {kv.key} is unreadable: {exc}") from exc


def _moved(agent: str, expected: int, found: int) -> str:
    return (
        f"route of {agent!r} is at revision {found}, not {expected}; nothing was written. "
        "Re-read it with `holdfastctl route show` and decide again"
    )
