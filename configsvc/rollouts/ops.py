"""Rollout operations over the store: each is one audited compare-and-swap of ``routes/<agent>``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from configsvc import errors
from configsvc.limits import ROLLOUT_ACTIONS
from configsvc.releases import ConfigService, RouteChange, RouteEdit, checker, store_read
from configsvc.rollouts import plan as rollout_plan
from configsvc.traffic import PinOps, Selection
from holdfast.keyspace import RecordError, Route
from holdfast.keyspace.policy import HealthPolicy
from holdfast.logs import get_logger

log = get_logger(__name__)

ACTIONS: Final = ROLLOUT_ACTIONS


@dataclass(frozen=True, slots=True, kw_only=True)
class StartRollout:
    release: str
    steps: tuple[float, ...]
    interval_s: float
    reason: str = ""
    policy: HealthPolicy | None = None
    allow_provider_change: bool = False


class RolloutOps:
    def __init__(self, service: ConfigService, pins: PinOps | None = None) -> None:
        self.service = service
        self.pins = pins if pins is not None else PinOps(service)

    async def start(self, agent: str, req: StartRollout, actor: str) -> RouteChange:
        await self.service.get_route(agent)  # an unknown agent says so, not "no such release"
        placed = (await self.service.get_release(agent, req.release)).record
        releases = await self.service.release_map(agent)
        check = checker(releases, placed, "rollout", allow=req.allow_provider_change)

        def edit(current: Route | None) -> Route:
            check(current)
            return rollout_plan.start(
                current,
                agent=agent,
                release=req.release,
                steps=req.steps,
                interval_s=req.interval_s,
                actor=actor,
                now=self.service.clock(),
                policy=req.policy,
            )

        change = await self.service.update_route(agent, edit, actor, "rollout.start", req.reason)
        log.info(
            "rollout_started",
            agent=agent,
            release=req.release,
            steps=list(req.steps),
            interval_s=req.interval_s,
            revision=change.mod_revision,
            actor=actor,
        )
        return change

    async def act(
        self,
        agent: str,
        action: str,
        actor: str,
        reason: str,
        *,
        extra: dict[str, object] | None = None,
    ) -> RouteChange:
        """pause | resume | promote | abort, by an operator (or, for abort, a health gate)."""
        now = self.service.clock()
        edits: dict[str, RouteEdit] = {
            "pause": lambda r: rollout_plan.pause(r, agent=agent, actor=actor, now=now),
            "resume": lambda r: rollout_plan.resume(r, agent=agent, actor=actor, now=now),
            "promote": lambda r: rollout_plan.promote(r, agent=agent, actor=actor, now=now),
            "abort": lambda r: rollout_plan.abort(
                r, agent=agent, actor=actor, now=now, reason=reason
            ),
        }
        if action not in edits:
            raise errors.InvalidRequest(f"unknown rollout action {action!r:.30}")
        change = await self.service.update_route(
            agent, edits[action], actor, f"rollout.{action}", reason, extra=extra
        )
        log.info(
            "rollout_action",
            action=action,
            agent=agent,
            changed=change.changed,
            revision=change.mod_revision,
            actor=actor,
        )
        return change

    async def migrate_aborted(self, change: RouteChange, actor: str, reason: str) -> dict[str, Any]:
        """After an abort: the aborted release's pinned sessions to stable (audited as
        ``rollout.abort_migrate``; each session is told by X-Holdfast-Migrated-From); what
        moved, as ``pins migrate`` reports it."""
        route, rollout = change.route, change.route.rollout
        if rollout is None or rollout.state != "aborted":
            raise errors.InvalidRequest("only an aborted rollout's sessions can be migrated")
        selection = Selection(agent=route.agent, source=rollout.release, target=route.stable)
        migration = await self.pins.migrate(
            selection, actor, reason or "rollout abort --migrate", action="rollout.abort_migrate"
        )
        return migration.to_json(selection)

    async def advance(self, agent: str) -> RouteChange:
        def edit(current: Route | None) -> Route:
            return rollout_plan.advance(current, agent=agent, now=self.service.clock())

        change = await self.service.update_route(
            agent, edit, rollout_plan.CONTROLLER, "rollout.advance", "interval elapsed"
        )
        if change.changed and change.route.rollout is not None:
            rollout = change.route.rollout
            log.info(
                "rollout_advanced",
                agent=agent,
                release=rollout.release,
                state=rollout.state,
                step=rollout.step,
                percent=change.route.canary_percent,
                revision=change.mod_revision,
            )
        return change

    async def status(self, agent: str) -> dict[str, Any]:
        found = await self.service.get_route(agent)
        route = found.record
        return {
            "agent": agent,
            "stable": route.stable,
            "canary": route.canary or None,
            "canary_percent": route.canary_percent,
            "rollout": rollout_plan.status(route, self.service.clock()),
            "mod_revision": found.mod_revision,
        }

    async def routes(self) -> list[Route]:
        """Every readable route of the environment (unreadable ones are logged and skipped)."""
        prefix = self.service.keyspace.kind_prefix("routes")
        _, kvs = await store_read(self.service.store.list_prefix(prefix))
        found: list[Route] = []
        for kv in kvs:
            try:
                found.append(Route.decode(kv.value))
            except RecordError as exc:
                log.warning("route_unreadable", key=kv.key, error=str(exc))
        return found
