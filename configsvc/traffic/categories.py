"""A route's category rules: ``PUT|DELETE /v1/agents/{agent}/route/categories``.

Admission compiles every pattern exactly as the sidecar will (RE2), so a rule that a sidecar
could not use is refused here with 400 and the reason; the change is one audited
compare-and-swap of the route (``route.set_categories``, ``route.clear_categories``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from aiohttp import web

from configsvc.errors import InvalidRequest
from configsvc.http import actor_of, agent_of, parse_object, read_body, reply, text
from configsvc.releases import ConfigService, RouteChange, require
from holdfast.keyspace import RecordError, Route
from holdfast.keyspace.categories import MAX_CATEGORY_RULES, CategoryRule
from holdfast.logs import get_logger
from holdfast.signals.categories import RuleError, compile_rule

log = get_logger(__name__)

RULE_FIELDS: Final = frozenset({"category", "keywords", "pattern", "tenants"})


def _strings(obj: dict[str, Any], name: str, param: str) -> tuple[str, ...]:
    value = obj.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"{param} must be a list of strings", param=param)
    return tuple(value)


def parse_rule(obj: Any, index: int) -> CategoryRule:
    where = f"rules[{index}]"
    if not isinstance(obj, dict):
        raise InvalidRequest(f"{where} must be an object", param=where)
    unknown = sorted(set(obj) - RULE_FIELDS)
    if unknown:
        raise InvalidRequest(
            f"{where}: unknown field {unknown[0]!r:.40}; known: {', '.join(sorted(RULE_FIELDS))}",
            param=f"{where}.{unknown[0]:.40}",
        )
    pattern = obj.get("pattern") or ""
    if not isinstance(pattern, str) or not isinstance(obj.get("category"), str):
        raise InvalidRequest(f"{where}: category and pattern must be strings", param=where)
    try:
        rule = CategoryRule(
            category=obj["category"],
            keywords=_strings(obj, "keywords", f"{where}.keywords"),
            pattern=pattern,
            tenants=_strings(obj, "tenants", f"{where}.tenants"),
        )
        compile_rule(rule)
    except RuleError as exc:
        raise InvalidRequest(f"{where}: {exc}", param=f"{where}.pattern") from exc
    except RecordError as exc:
        raise InvalidRequest(f"{where}: {exc}", param=where) from exc
    return rule


@dataclass(frozen=True, slots=True, kw_only=True)
class SetCategories:
    rules: tuple[CategoryRule, ...]
    reason: str = ""

    FIELDS: ClassVar[frozenset[str]] = frozenset({"rules", "reason"})

    @classmethod
    def parse(cls, raw: bytes) -> SetCategories:
        obj = parse_object(raw, cls.FIELDS)
        rules = obj.get("rules")
        if not isinstance(rules, list):
            raise InvalidRequest("field 'rules' must be a list of rule objects", param="rules")
        if len(rules) > MAX_CATEGORY_RULES:
            raise InvalidRequest(
                f"at most {MAX_CATEGORY_RULES} category rules per route", param="rules"
            )
        return cls(
            rules=tuple(parse_rule(r, i) for i, r in enumerate(rules)),
            reason=text(obj, "reason"),
        )


def with_categories(
    current: Route | None, *, agent: str, rules: tuple[CategoryRule, ...], actor: str, now: float
) -> Route:
    route = require(agent, current)
    if route.categories == rules:
        return route
    return dataclasses.replace(route, categories=rules, updated_at=now, updated_by=actor)


class CategoryApi:
    def __init__(self, service: ConfigService) -> None:
        self.service = service

    async def _set(
        self, agent: str, rules: tuple[CategoryRule, ...], actor: str, reason: str
    ) -> RouteChange:
        def edit(current: Route | None) -> Route:
            return with_categories(
                current, agent=agent, rules=rules, actor=actor, now=self.service.clock()
            )

        action = "route.set_categories" if rules else "route.clear_categories"
        change = await self.service.update_route(agent, edit, actor, action, reason)
        if change.changed:
            log.info(
                "route_categories_changed",
                agent=agent,
                rules=len(rules),
                revision=change.mod_revision,
                actor=actor,
            )
        return change

    async def set_rules(self, request: web.Request) -> web.Response:
        agent, actor = agent_of(request), actor_of(request)
        req = SetCategories.parse(await read_body(request))
        return reply((await self._set(agent, req.rules, actor, req.reason)).to_json())

    async def clear_rules(self, request: web.Request) -> web.Response:
        agent, actor = agent_of(request), actor_of(request)
        obj = parse_object(await read_body(request), frozenset({"reason"}), empty_ok=True)
        return reply((await self._set(agent, (), actor, text(obj, "reason"))).to_json())

    def routes(self) -> list[web.RouteDef]:
        path = "/v1/agents/{agent}/route/categories"
        return [web.put(path, self.set_rules), web.delete(path, self.clear_rules)]
