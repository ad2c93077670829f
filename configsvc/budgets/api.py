"""HTTP handlers of budgets: ``/v1/budgets`` and ``/v1/budgets/{scope}[/usage]``, plus the
price table their cost limits use (``/v1/prices``, configsvc.budgets.prices)."""

from __future__ import annotations

from aiohttp import web

from configsvc.budgets.ops import BudgetOps
from configsvc.budgets.payloads import SetBudget, budget_scope
from configsvc.budgets.prices import PriceApi
from configsvc.http import actor_of, parse_object, read_body, reply, text


def _scope(request: web.Request) -> str:
    return budget_scope(request.match_info["scope"])


class BudgetApi:
    def __init__(self, ops: BudgetOps) -> None:
        self.ops = ops

    async def list_budgets(self, request: web.Request) -> web.Response:
        revision, budgets = await self.ops.list()
        return reply({"revision": revision, "budgets": [b.to_json() for b in budgets]})

    async def show(self, request: web.Request) -> web.Response:
        return reply({"budget": (await self.ops.get(_scope(request))).to_json()})

    async def set_budget(self, request: web.Request) -> web.Response:
        scope, actor = _scope(request), actor_of(request)
        req = SetBudget.parse(await read_body(request))
        stored, created = await self.ops.set(scope, req, actor)
        return reply({"budget": stored.to_json(), "created": created}, 201 if created else 200)

    async def delete(self, request: web.Request) -> web.Response:
        scope, actor = _scope(request), actor_of(request)
        obj = parse_object(await read_body(request), frozenset({"reason"}), empty_ok=True)
        revision = await self.ops.delete(scope, text(obj, "reason"), actor)
        return reply({"scope": scope, "deleted": True, "revision": revision})

    async def usage(self, request: web.Request) -> web.Response:
        return reply({"usage": await self.ops.usage(_scope(request))})

    def routes(self) -> list[web.RouteDef]:
        one = "/v1/budgets/{scope}"
        return [
            web.get("/v1/budgets", self.list_budgets),
            web.get(one, self.show),
            web.put(one, self.set_budget),
            web.delete(one, self.delete),
            web.get(f"{one}/usage", self.usage),
            *PriceApi(self.ops.service).routes(),
        ]
