"""``GET /v1/models`` and ``GET /v1/models/{name}``: the logical model names this sidecar
routes, in OpenAI's shapes, or Anthropic's when the client sends ``anthropic-version`` (a name
it does not route is a 404 ``model_not_found`` in the client's error shape)."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from holdfast import dialects
from holdfast.dialects import anthropic_models
from sidecar.config import ConfigSnapshot, ConfigState, known_models
from sidecar.errors import InvalidRequest, UnknownModel
from sidecar.pipeline import DIALECT_KEY

ANTHROPIC: Final = dialects.by_name("anthropic.messages")


class Models:
    def __init__(self, config: ConfigState, agent: str) -> None:
        self.config = config
        self.agent = agent

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/models", self.models), web.get("/v1/models/{name}", self.model)]

    def _entry(self, snapshot: ConfigSnapshot | None, name: str) -> dict[str, Any]:
        created = int(snapshot.applied_at) if snapshot else 0
        release = None
        if snapshot and snapshot.route:
            release = snapshot.releases.get(snapshot.route.stable)
        return {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "holdfast",
            "holdfast_release": release.name if release else None,
            "holdfast_model": release.model if release else None,
        }

    async def models(self, request: web.Request) -> web.Response:
        snapshot = self.config.current
        names = known_models(snapshot, self.agent)
        if anthropic_models.speaks_anthropic(request.headers):
            request[DIALECT_KEY] = ANTHROPIC  # its errors in Anthropic's shape too
            try:
                page = anthropic_models.model_page(names, _created(snapshot), request.query)
            except anthropic_models.BadPage as exc:
                raise InvalidRequest(str(exc), param=exc.param) from exc
            return web.json_response(page)
        data = [self._entry(snapshot, name) for name in names]
        return web.json_response({"object": "list", "data": data})

    async def model(self, request: web.Request) -> web.Response:
        snapshot = self.config.current
        name = request.match_info["name"]
        names = known_models(snapshot, self.agent)
        anthropic = anthropic_models.speaks_anthropic(request.headers)
        if anthropic:
            request[DIALECT_KEY] = ANTHROPIC
        if name not in names:
            raise UnknownModel(
                f"model {name!r:.100} is not routed by this sidecar; ask for one of: "
                + ", ".join(names),
                param="model",
            )
        if anthropic:
            return web.json_response(anthropic_models.model_info(name, _created(snapshot)))
        return web.json_response(self._entry(snapshot, name))


def _created(snapshot: ConfigSnapshot | None) -> float:
    return snapshot.applied_at if snapshot else 0.0
