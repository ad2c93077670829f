"""The aiohttp application: the API's middleware and every concern's route table, assembled.

Each concern (``configsvc.releases``, ``traffic``, ``rollouts``...) answers its own routes; the
request plumbing they share (limits, auth, the error shape) is ``configsvc.http``'s. This module
only puts them together and stores on the application what that plumbing reads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, Protocol

from aiohttp import web

from configsvc.http import (
    AUTH_KEY,
    BODY_LIMIT_KEY,
    HOSTS_KEY,
    UPSTREAM_KEY,
    Authorizer,
    error_middleware,
    reply,
)
from configsvc.prompts.reads import PromptReads
from configsvc.releases import ConfigService, PromptResolver, ReleasesApi
from configsvc.server.settings import MAX_BODY_BYTES
from holdfast.net.guard import HostPolicy
from holdfast.net.hostcheck import allowed_hosts

SERVICE_KEY: Final = web.AppKey("service", ConfigService)


class RouteSource(Protocol):
    """A group of handlers (traffic, rollout...) that adds its routes to the app."""

    def routes(self) -> list[web.RouteDef]: ...


async def healthz(request: web.Request) -> web.Response:
    """Liveness, open to anyone (no token): the process answers, and for which environment."""
    return reply({"status": "ok", "env": request.app[SERVICE_KEY].keyspace.env})


def build_app(
    service: ConfigService,
    authorizer: Authorizer,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    extra: Sequence[RouteSource] = (),
    hosts: frozenset[str] | None = None,
    upstream: HostPolicy | None = None,
    prompts: PromptResolver | None = None,
    mounts: Sequence[Callable[[web.Application], None]] = (),
) -> web.Application:
    """The API: health, releases and routes, then ``extra``'s routes; ``mounts`` add what is
    more than routes (the console: its routes, its own authentication, its shutdown).

    ``hosts``: accepted Host headers (default: loopback names only); ``upstream``: the
    allowlist for release base URLs and contract backends (default: ``HostPolicy()``);
    ``prompts``: resolves a new release's prompt versions (default: read from ``service``)."""
    app = web.Application(middlewares=[error_middleware], client_max_size=max_body_bytes)
    app[SERVICE_KEY] = service
    app[AUTH_KEY] = authorizer
    app[BODY_LIMIT_KEY] = max_body_bytes
    app[HOSTS_KEY] = hosts if hosts is not None else allowed_hosts("127.0.0.1")
    app[UPSTREAM_KEY] = upstream if upstream is not None else HostPolicy()
    app.add_routes([web.get("/healthz", healthz)])
    resolver = prompts if prompts is not None else PromptReads(service)
    app.add_routes(ReleasesApi(service, resolver).routes())
    for source in extra:
        app.add_routes(source.routes())
    for mount in mounts:
        mount(app)
    return app
