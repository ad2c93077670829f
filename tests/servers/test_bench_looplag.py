"""bench.looplag scrapes a live /metrics as the overhead bench does around a sidecar's rounds:
a histogram there is read and differenced; a server without it, or none at all, gives None."""

from __future__ import annotations

from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from bench import looplag


async def test_lag_is_scraped_from_a_live_metrics_endpoint() -> None:
    registry = CollectorRegistry()
    lag = Histogram(
        looplag.LAG_METRIC, "loop lag", registry=registry, buckets=(0.001, 0.002, 0.005)
    )

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    async with TestServer(app) as server:
        url = str(server.make_url("/metrics"))
        before = await looplag.read(url)
        for seconds in (0.0004, 0.0004, 0.003):
            lag.observe(seconds)
        after = await looplag.read(url)
        assert before is not None and after is not None
        window = after - before
        assert window.count == 3
        assert window.worst_bound == 0.005
        assert await looplag.read(str(server.make_url("/nothing"))) is None


async def test_no_lag_from_a_sidecar_without_the_metric_or_without_a_listener() -> None:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text="# TYPE other_total counter\nother_total 1.0\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    async with TestServer(app) as server:
        url = str(server.make_url("/metrics"))
        assert await looplag.read(url) is None
    assert await looplag.read(url) is None  # closed: connection refused
