"""Traffic operations: canary, blue-green switch and shadow, each one audited route CAS; the
shadow report from the sidecars' health snapshots; switch --migrate through ``PinOps``.

Every route edit runs inside ``ConfigService.update_route``, against the route as it is at that
compare-and-swap, so a check ("no rollout is active") can never be made on a stale read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from configsvc import errors
from configsvc.releases import (
    ConfigService,
    Prober,
    RouteChange,
    RouteEdit,
    checker,
    store_read,
)
from configsvc.traffic import edits as traffic_routes
from configsvc.traffic.payloads import ReportQuery, SetCanary, SetShadow, Switch
from configsvc.traffic.pins import Migration, PinOps, Selection
from configsvc.traffic.shadow_report import Thresholds, report
from holdfast.keyspace import HealthSnapshot, RecordError, Route, Shadow
from holdfast.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SwitchResult:
    change: RouteChange
    probe: dict[str, Any]
    migration: Migration | None
    selection: Selection | None


class LatestBeats(Protocol):
    """The newest health beats of an agent's sidecars, as the replicas that own the agent hold
    them (``configsvc.health``); beats go there over HTTP, not into etcd."""

    async def latest(self, agent: str, headers: Mapping[str, str]) -> list[HealthSnapshot]: ...


class TrafficOps:
    def __init__(
        self,
        service: ConfigService,
        prober: Prober,
        pins: PinOps,
        beats: LatestBeats | None = None,
    ) -> None:
        self.service = service
        self.prober = prober
        self.pins = pins
        self.beats = beats

    async def _route(self, agent: str) -> Route:
        return (await self.service.get_route(agent)).record

    # -- canary --------------------------------------------------------------------------------

    async def set_canary(self, agent: str, req: SetCanary, actor: str) -> RouteChange:
        await self._route(agent)  # an unknown agent says so, rather than "no such release"
        placed = (await self.service.get_release(agent, req.release)).record  # never deleted
        traffic = await self.service.agent_traffic(agent)
        check = checker(traffic, placed, "canary", allow=req.allow_provider_change)

        def edit(current: Route | None) -> Route:
            check(current)
            return traffic_routes.with_canary(
                current,
                agent=agent,
                release=req.release,
                percent=req.percent,
                actor=actor,
                now=self.service.clock(),
            )

        change = await self.service.update_route(agent, edit, actor, "canary.set", req.reason)
        log.info(
            "canary_set",
            agent=agent,
            release=req.release,
            percent=req.percent,
            changed=change.changed,
            revision=change.mod_revision,
            actor=actor,
        )
        return change

    async def clear_canary(self, agent: str, reason: str, actor: str) -> RouteChange:
        def edit(current: Route | None) -> Route:
            return traffic_routes.without_canary(
                current, agent=agent, actor=actor, now=self.service.clock()
            )

        change = await self.service.update_route(agent, edit, actor, "canary.clear", reason)
        log.info("canary_cleared", agent=agent, changed=change.changed, actor=actor)
        return change

    # -- blue-green ----------------------------------------------------------------------------

    async def switch(self, agent: str, req: Switch, actor: str) -> SwitchResult:
        route = await self._route(agent)
        clock = self.service.clock
        edit: RouteEdit
        if req.back:
            # The way back is never blocked by a probe: it is the release that served until now.
            probe: dict[str, Any] = {"status": "not_needed"}

            def edit(current: Route | None) -> Route:
                return traffic_routes.switched_back(current, agent=agent, actor=actor, now=clock())
        else:
            release = (await self.service.get_release(agent, req.release)).record
            traffic = await self.service.agent_traffic(agent)
            check = checker(traffic, release, "stable", allow=req.allow_provider_change)
            # Refuse what the route already rules out before spending a provider call on it.
            check(route)
            traffic_routes.switched(route, agent=agent, release=req.release, actor=actor, now=0.0)
            probe = (
                await self.prober.probe(release, traffic) if req.probe else {"status": "skipped"}
            )

            def edit(current: Route | None) -> Route:
                check(current)
                return traffic_routes.switched(
                    current, agent=agent, release=req.release, actor=actor, now=clock()
                )

        action = "switch.back" if req.back else "switch"
        change = await self.service.update_route(
            agent, edit, actor, action, req.reason, extra={"probe": probe["status"]}
        )
        log.info(
            "switched",
            agent=agent,
            stable=change.route.stable,
            previous=change.route.previous_stable,
            probe=probe["status"],
            revision=change.mod_revision,
            actor=actor,
        )
        migration = selection = None
        if req.migrate:
            selection = Selection(agent=agent, target=change.route.stable)
            migration = await self.pins.migrate(
                selection, actor, req.reason or f"{action} --migrate", action="switch.migrate"
            )
        return SwitchResult(change, probe, migration, selection)

    # -- shadow --------------------------------------------------------------------------------

    async def set_shadow(self, agent: str, req: SetShadow, actor: str) -> RouteChange:
        await self._route(agent)
        placed = (await self.service.get_release(agent, req.release)).record
        traffic = await self.service.agent_traffic(agent)
        check = checker(traffic, placed, "shadow", allow=req.allow_provider_change)

        def edit(current: Route | None) -> Route:
            check(current)
            try:
                shadow = Shadow(
                    release=req.release,
                    percent=req.percent,
                    since=self.service.clock(),
                    min_samples=req.min_samples,
                    min_similarity=req.min_similarity,
                    min_agreement=req.min_agreement,
                )
            except RecordError as exc:
                raise errors.InvalidRequest(str(exc)) from exc
            return traffic_routes.with_shadow(current, agent=agent, shadow=shadow, actor=actor)

        change = await self.service.update_route(agent, edit, actor, "shadow.set", req.reason)
        log.info(
            "shadow_set",
            agent=agent,
            release=req.release,
            percent=req.percent,
            revision=change.mod_revision,
            actor=actor,
        )
        return change

    async def clear_shadow(self, agent: str, reason: str, actor: str) -> RouteChange:
        def edit(current: Route | None) -> Route:
            return traffic_routes.without_shadow(
                current, agent=agent, actor=actor, now=self.service.clock()
            )

        change = await self.service.update_route(agent, edit, actor, "shadow.clear", reason)
        log.info("shadow_cleared", agent=agent, changed=change.changed, actor=actor)
        return change

    async def shadow_report(
        self, agent: str, query: ReportQuery, headers: Mapping[str, str] | None = None
    ) -> dict[str, Any]:
        """The report over every live sidecar of the agent: those etcd holds a health key of
        (its presence), each counted from the newest snapshot there is, its etcd value or the
        last beat its agent's owner replica took."""
        found = await self.service.get_route(agent)
        shadow = found.record.shadow
        if shadow is None:
            raise errors.Conflict(
                f"agent {agent!r} has no shadow; start one with `holdfastctl shadow set`"
            )
        limits = Thresholds(
            min_samples=query.min_samples or shadow.min_samples,
            min_similarity=_pick(query.min_similarity, shadow.min_similarity),
            min_agreement=_pick(query.min_agreement, shadow.min_agreement),
        )
        revision, kvs = await store_read(
            self.service.store.list_prefix(self.service.keyspace.kind_prefix("health"))
        )
        snapshots: dict[str, HealthSnapshot] = {}
        unreadable = 0
        for kv in kvs:
            try:
                snap = HealthSnapshot.decode(kv.value)
            except RecordError as exc:
                unreadable += 1
                log.warning("health_snapshot_unreadable", key=kv.key, error=str(exc))
                continue
            snapshots[snap.sidecar_id] = snap
        if self.beats is not None:
            for beat in await self.beats.latest(agent, headers or {}):
                held = snapshots.get(beat.sidecar_id)
                if held is not None and beat.at > held.at:
                    snapshots[beat.sidecar_id] = beat
        body = report(snapshots.values(), agent, shadow, limits)
        return {"agent": agent, "revision": revision, "unreadable_snapshots": unreadable, **body}


def _pick(override: float | None, default: float) -> float:
    return default if override is None else override
