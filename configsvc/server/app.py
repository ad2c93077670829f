"""The HTTP API: aiohttp handlers over ``ConfigService``, auth, and the one error shape."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, Protocol

from aiohttp import web

from configsvc.errors import (
    BodyTooLarge,
    ConfigsvcError,
    MethodNotAllowed,
    MisdirectedRequest,
    UnknownEndpoint,
    UpstreamRefused,
    spec_for,
)
from configsvc.http.access import required_role
from configsvc.http.auth import Authorizer
from configsvc.http.payloads import HistoryQuery, NewRelease, Rollback, SetAliases, SetStable, name
from configsvc.http.tokens import Identity
from configsvc.releases import create as release_create
from configsvc.releases.ops import ConfigService, RouteChange, Versioned
from configsvc.server.settings import MAX_BODY_BYTES
from holdfast.errorshape import error_body
from holdfast.keyspace import Release, Route
from holdfast.logs import (
    REQUEST_ID_HEADER,
    bind_request_id,
    clear_request_id,
    get_logger,
    request_id_from,
)
from holdfast.net.guard import HostPolicy, HostRefused
from holdfast.net.hostcheck import allowed_hosts, host_allowed

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SERVICE_KEY: Final = web.AppKey("service", ConfigService)
AUTH_KEY: Final = web.AppKey("authorizer", Authorizer)
BODY_LIMIT_KEY: Final = web.AppKey("body_limit", int)
READ_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
OPEN_PATHS: Final = frozenset({"/healthz"})
IDENTITY_KEY: Final = web.RequestKey("identity", Identity)
HOSTS_KEY: Final = web.AppKey("hosts", frozenset[str])
UPSTREAM_KEY: Final = web.AppKey("upstream_policy", HostPolicy)


def error_response(exc: ConfigsvcError) -> web.Response:
    spec = spec_for(exc)
    response = web.json_response(error_body(exc.message, spec, exc.param), status=spec.status)
    if spec.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="holdfast"'
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request ids, authorization, and every failure turned into the API's error shape."""
    request_id = request_id_from(request.headers.get(REQUEST_ID_HEADER, ""))
    bind_request_id(request_id)
    try:
        host = request.headers.get("Host")
        if not host_allowed(host, request.app[HOSTS_KEY]):
            log.warning("host_header_refused", path=request.path[:200])
            raise MisdirectedRequest(
                f"Host {host!r:.100} is not served here: use a loopback name or address, or "
                "start configsvc with --allowed-host"
            )
        if request.path not in OPEN_PATHS:
            resource = request.match_info.route.resource
            pattern = resource.canonical if resource is not None else request.path
            request[IDENTITY_KEY] = request.app[AUTH_KEY].check(
                mutation=request.method not in READ_METHODS,
                remote=request.remote,
                headers=request.headers,
                required=required_role(request.method, pattern),
            )
        response = await handler(request)
    except ConfigsvcError as exc:
        spec = spec_for(exc)
        log.info(
            "request_refused",
            method=request.method,
            path=request.path,
            status=spec.status,
            code=spec.code,
        )
        response = error_response(exc)
    except web.HTTPMethodNotAllowed as exc:
        response = error_response(
            MethodNotAllowed(f"{request.method} is not allowed on {request.path:.200}")
        )
        response.headers["Allow"] = ",".join(sorted(exc.allowed_methods))
    except web.HTTPNotFound:
        response = error_response(
            UnknownEndpoint(f"no endpoint {request.method} {request.path:.200}")
        )
    except (ConnectionResetError, asyncio.CancelledError):
        log.info("client_disconnected", path=request.path)
        raise
    except Exception:
        log.exception("request_failed", method=request.method, path=request.path)
        response = error_response(ConfigsvcError("internal error in configsvc; see its log"))
    finally:
        clear_request_id()
    response.headers[REQUEST_ID_HEADER] = request_id
    return response


async def read_body(request: web.Request) -> bytes:
    limit = request.app[BODY_LIMIT_KEY]
    too_large = BodyTooLarge(f"request body is larger than {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise too_large from exc


def admit_upstream(request: web.Request, url: str, *, param: str) -> None:
    """Refuse (400 upstream_host_refused) a URL at a host the upstream allowlist refuses."""
    try:
        request.app[UPSTREAM_KEY].check_url(url)
    except HostRefused as exc:
        log.info("upstream_host_refused", param=param, reason=str(exc))
        raise UpstreamRefused(
            f"{param} refused: {exc} (configsvc --allow-upstream-host decides which hosts "
            "providers and tool backends may use)",
            param=param,
        ) from exc


def _agent(request: web.Request) -> str:
    return name(request.match_info["agent"], what="agent", param="agent")


def _release(request: web.Request) -> str:
    return name(request.match_info["release"], what="release", param="release")


def _actor(request: web.Request) -> str:
    return request.app[AUTH_KEY].actor(request.headers, request.get(IDENTITY_KEY))


def release_json(v: Versioned[Release]) -> dict[str, Any]:
    return {**v.record.public(), "mod_revision": v.mod_revision}


def route_json(v: Versioned[Route]) -> dict[str, Any]:
    return {"route": v.record.public(), "mod_revision": v.mod_revision}


def change_json(change: RouteChange) -> dict[str, Any]:
    return {
        "route": change.route.public(),
        "mod_revision": change.mod_revision,
        "changed": change.changed,
        "before": change.before.public() if change.before else None,
    }


def _json(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, sort_keys=True))


class Api:
    def __init__(self, service: ConfigService) -> None:
        self.service = service

    async def healthz(self, request: web.Request) -> web.Response:
        return _json({"status": "ok", "env": self.service.keyspace.env})

    async def list_releases(self, request: web.Request) -> web.Response:
        agent = _agent(request)
        revision, releases = await self.service.list_releases(agent)
        return _json(
            {"agent": agent, "revision": revision, "releases": [release_json(r) for r in releases]}
        )

    async def create_release(self, request: web.Request) -> web.Response:
        agent, actor = _agent(request), _actor(request)
        req = NewRelease.parse(await read_body(request))
        admit_upstream(request, req.base_url, param="base_url")
        created = await release_create.create_release(self.service, agent, req, actor)
        return _json({"release": release_json(created)}, status=201)

    async def show_release(self, request: web.Request) -> web.Response:
        found = await self.service.get_release(_agent(request), _release(request))
        return _json({"release": release_json(found)})

    async def show_route(self, request: web.Request) -> web.Response:
        return _json(route_json(await self.service.get_route(_agent(request))))

    async def set_stable(self, request: web.Request) -> web.Response:
        agent, actor = _agent(request), _actor(request)
        req = SetStable.parse(await read_body(request))
        return _json(change_json(await self.service.set_stable(agent, req, actor)))

    async def rollback(self, request: web.Request) -> web.Response:
        agent, actor = _agent(request), _actor(request)
        req = Rollback.parse(await read_body(request))
        return _json(change_json(await self.service.rollback(agent, req, actor)))

    async def set_aliases(self, request: web.Request) -> web.Response:
        agent, actor = _agent(request), _actor(request)
        req = SetAliases.parse(await read_body(request))
        return _json(change_json(await self.service.set_aliases(agent, req, actor)))

    async def history(self, request: web.Request) -> web.Response:
        query = HistoryQuery.parse(request.query)
        revision, items = await self.service.history(query)
        return _json({"revision": revision, "entries": [i.to_json() for i in items]})

    def routes(self) -> list[web.RouteDef]:
        agent = "/v1/agents/{agent}"
        return [
            web.get("/healthz", self.healthz),
            web.get(f"{agent}/releases", self.list_releases),
            web.post(f"{agent}/releases", self.create_release),
            web.get(f"{agent}/releases/{{release}}", self.show_release),
            web.get(f"{agent}/route", self.show_route),
            web.put(f"{agent}/route/stable", self.set_stable),
            web.post(f"{agent}/route/rollback", self.rollback),
            web.put(f"{agent}/route/aliases", self.set_aliases),
            web.get("/v1/history", self.history),
        ]


class RouteSource(Protocol):
    """A group of handlers (traffic, rollout...) that adds its routes to the app."""

    def routes(self) -> list[web.RouteDef]: ...


def build_app(
    service: ConfigService,
    authorizer: Authorizer,
    *,
    max_body_bytes: int = MAX_BODY_BYTES,
    extra: Sequence[RouteSource] = (),
    hosts: frozenset[str] | None = None,
    upstream: HostPolicy | None = None,
) -> web.Application:
    """``hosts``: accepted Host headers (default: loopback names only); ``upstream``: the
    allowlist for release base URLs and contract backends (default: ``HostPolicy()``)."""
    app = web.Application(middlewares=[error_middleware], client_max_size=max_body_bytes)
    app[SERVICE_KEY] = service
    app[AUTH_KEY] = authorizer
    app[BODY_LIMIT_KEY] = max_body_bytes
    app[HOSTS_KEY] = hosts if hosts is not None else allowed_hosts("127.0.0.1")
    app[UPSTREAM_KEY] = upstream if upstream is not None else HostPolicy()
    app.add_routes(Api(service).routes())
    for source in extra:
        app.add_routes(source.routes())
    return app
