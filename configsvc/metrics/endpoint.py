"""``GET /metrics``: configsvc's Prometheus text, a viewer's read like any other (a token, or
none from loopback unless ``--require-token-for-reads``)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector


class MetricsEndpoint:
    def __init__(self, *collectors: Collector) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        for collector in collectors:
            self.registry.register(collector)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/metrics", self.metrics)]
