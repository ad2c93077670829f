"""``GET /v1/models`` and ``GET /v1/models/{name}``: the logical model names this sidecar
routes, in OpenAI's shapes (a name it does not route is OpenAI's 404 ``model_not_found``)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sidecar.config import ConfigSnapshot, ConfigState, known_models
from sidecar.errors import UnknownModel


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
        data = [self._entry(snapshot, name) for name in known_models(snapshot, self.agent)]
        return web.json_response({"object": "list", "data": data})

    async def model(self, request: web.Request) -> web.Response:
        snapshot = self.config.current
        name = request.match_info["name"]
        names = known_models(snapshot, self.agent)
        if name not in names:
            raise UnknownModel(
                f"model {name!r:.100} is not routed by this sidecar; ask for one of: "
                + ", ".join(names),
                param="model",
            )
        return web.json_response(self._entry(snapshot, name))
