"""``/_control`` of the fake upstream: how tests and benchmarks steer it and see what it saw.

Per-model behaviour (get, put, delete), per-model stats, the request log and a reset. This is the
harness's side door, so it needs no API key and its calls stay out of the request log.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping

from aiohttp import web

from holdfast.logs import get_logger
from holdfast_devtools.fakellm.behaviour import BehaviourTable
from holdfast_devtools.fakellm.protocol import ApiError

log = get_logger(__name__)


def json_response(
    body: object, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    payload = json.dumps(body).encode()
    return web.Response(
        body=payload, status=status, headers=headers, content_type="application/json"
    )


class Control:
    """The control API over the fake's behaviour table and request log (shared, not copied)."""

    def __init__(self, behaviours: BehaviourTable, requests: deque[dict[str, object]]) -> None:
        self.behaviours = behaviours
        self.requests = requests

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/_control/models/{model}", self.get_behaviour)
        router.add_put("/_control/models/{model}", self.put_behaviour)
        router.add_delete("/_control/models/{model}", self.delete_behaviour)
        router.add_get("/_control/stats", self.get_stats)
        router.add_get("/_control/requests", self.get_requests)
        router.add_post("/_control/reset", self.reset)

    async def get_behaviour(self, request: web.Request) -> web.StreamResponse:
        return self._behaviour_response(request.match_info["model"])

    async def put_behaviour(self, request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        try:
            behaviour = self.behaviours.set(model, json.loads(await request.read()))
        except ValueError as exc:  # BehaviourError, or JSON that does not parse
            raise ApiError(f"bad behaviour for {model}: {exc}", code="invalid_behaviour") from exc
        log.info("fakellm_behaviour_set", model=model, behaviour=behaviour.to_json())
        return self._behaviour_response(model)

    async def delete_behaviour(self, request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        if self.behaviours.clear(model):
            log.info("fakellm_behaviour_cleared", model=model)
        return self._behaviour_response(model)

    def _behaviour_response(self, model: str) -> web.Response:
        behaviour = self.behaviours.get(model).to_json()
        overridden = self.behaviours.is_overridden(model)
        return json_response({"model": model, "overridden": overridden, "behaviour": behaviour})

    async def get_stats(self, request: web.Request) -> web.StreamResponse:
        stats = {model: s.to_json() for model, s in self.behaviours.stats.items()}
        return json_response({"models": stats})

    async def get_requests(self, request: web.Request) -> web.StreamResponse:
        """The last ``limit`` recorded /v1 requests (default: all kept), oldest first."""
        limit_text = request.query.get("limit", str(len(self.requests)))
        if not limit_text.isdigit():
            raise ApiError("limit must be a non-negative integer", param="limit")
        limit = int(limit_text)
        recent = list(self.requests)[max(0, len(self.requests) - limit) :] if limit else []
        return json_response({"requests": recent})

    async def reset(self, request: web.Request) -> web.StreamResponse:
        self.behaviours.reset()
        self.requests.clear()
        log.info("fakellm_reset")
        return json_response({"reset": True})
