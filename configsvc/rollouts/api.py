"""HTTP handlers of the progressive rollout: start, status, pause, resume, promote, abort."""

from __future__ import annotations

from typing import Any, Final, Protocol

from aiohttp import web

from configsvc.errors import ConfigsvcError, InvalidRequest, StoreDown
from configsvc.http import actor_of, agent_of, name, parse_object, read_body, reply, text
from configsvc.leader import Election
from configsvc.releases import FORCE_FIELD, allowed
from configsvc.rollouts import plan as rollout_plan
from configsvc.rollouts.ops import ACTIONS, RolloutOps, StartRollout
from configsvc.rollouts.policy import parse_policy
from holdfast.keyspace import Rollout
from holdfast.store import StoreError

START_FIELDS: Final = frozenset({"release", "steps", "interval", "reason", "policy", FORCE_FIELD})


class GateReporter(Protocol):
    """What ``rollout status`` shows of the health gate (``configsvc.health.PolicyGate``)."""

    def report(self, agent: str, rollout: Rollout, stable: str) -> dict[str, Any] | None: ...


def parse_start(raw: bytes) -> StartRollout:
    obj = parse_object(raw, START_FIELDS)
    steps: Any = obj.get("steps")
    if isinstance(steps, str):
        parsed_steps = rollout_plan.parse_steps(steps)
    elif (
        isinstance(steps, list)
        and steps
        and all(isinstance(s, int | float) and not isinstance(s, bool) for s in steps)
    ):
        parsed_steps = rollout_plan.check_steps(tuple(float(s) for s in steps))
    else:
        raise InvalidRequest(
            "field 'steps' is required: a list of percentages or a string like \"1,5,25,100\"",
            param="steps",
        )
    interval: Any = obj.get("interval")
    if isinstance(interval, str):
        seconds = rollout_plan.parse_interval(interval)
    elif isinstance(interval, int | float) and not isinstance(interval, bool):
        seconds = rollout_plan.check_interval(float(interval))
    else:
        raise InvalidRequest(
            "field 'interval' is required: seconds, or a duration like \"10m\"", param="interval"
        )
    release = name(text(obj, "release", required=True), what="release", param="release")
    return StartRollout(
        release=release,
        steps=parsed_steps,
        interval_s=seconds,
        reason=text(obj, "reason"),
        policy=parse_policy(obj.get("policy")),
        allow_provider_change=allowed(obj),
    )


class RolloutApi:
    def __init__(
        self, ops: RolloutOps, election: Election, gate: GateReporter | None = None
    ) -> None:
        self.ops = ops
        self.election = election
        self.gate = gate

    async def start(self, request: web.Request) -> web.Response:
        agent, actor = agent_of(request), actor_of(request)
        req = parse_start(await read_body(request))
        return reply((await self.ops.start(agent, req, actor)).to_json(), status=201)

    async def status(self, request: web.Request) -> web.Response:
        body = await self.ops.status(agent_of(request))
        try:
            leader = await self.election.leader()
        except StoreError as exc:
            raise StoreDown(f"etcd is unavailable ({exc})") from exc
        body["controller"] = {"leader": leader, "this_replica_leads": self.election.is_leader}
        body["health_gate"] = await self._gate_report(body)
        return reply(body)

    async def _gate_report(self, body: dict[str, Any]) -> dict[str, Any] | None:
        if self.gate is None or body["rollout"].get("state") not in ("running", "paused"):
            return None
        route = (await self.ops.service.get_route(body["agent"])).record
        if route.rollout is None:
            return None
        return self.gate.report(route.agent, route.rollout, route.stable)

    async def act(self, request: web.Request) -> web.Response:
        agent, actor = agent_of(request), actor_of(request)
        action = request.match_info["action"]
        if action not in ACTIONS:
            raise InvalidRequest(
                f"unknown rollout action {action!r:.30}; one of: {', '.join(ACTIONS)}",
                param="action",
            )
        obj = parse_object(
            await read_body(request), frozenset({"reason", "migrate"}), empty_ok=True
        )
        migrate = obj.get("migrate", False)
        if not isinstance(migrate, bool) or (migrate and action != "abort"):
            raise InvalidRequest("'migrate' is true or false, and only for abort", param="migrate")
        reason = text(obj, "reason")
        change = await self.ops.act(agent, action, actor, reason)
        body = change.to_json()
        if migrate:
            try:
                body["migration"] = await self.ops.migrate_aborted(change, actor, reason)
            except ConfigsvcError as exc:  # the abort stands: say what is left to do
                body["migration"] = {
                    "error": f"{exc.message}; the abort is done, rerun the migration with "
                    f"`holdfastctl pins migrate {agent} --from RELEASE --to STABLE`"
                }
        return reply(body)

    def routes(self) -> list[web.RouteDef]:
        base = "/v1/agents/{agent}/rollout"
        return [
            web.post(base, self.start),
            web.get(base, self.status),
            web.post(base + "/{action}", self.act),
        ]
