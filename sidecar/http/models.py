"""``GET /v1/models``: the logical model names this sidecar routes, in OpenAI's list shape."""

from __future__ import annotations

from aiohttp import web

from sidecar.config import ConfigState, known_models


class Models:
    def __init__(self, config: ConfigState, agent: str) -> None:
        self.config = config
        self.agent = agent

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/v1/models", self.models)]

    async def models(self, request: web.Request) -> web.Response:
        snapshot = self.config.current
        created = int(snapshot.applied_at) if snapshot else 0
        release = None
        if snapshot and snapshot.route:
            release = snapshot.releases.get(snapshot.route.stable)
        data = [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "holdfast",
                "holdfast_release": release.name if release else None,
                "holdfast_model": release.model if release else None,
            }
            for name in known_models(snapshot, self.agent)
        ]
        return web.json_response({"object": "list", "data": data})
