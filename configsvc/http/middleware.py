"""The API's one middleware: request ids, the Host check, authorization by the endpoint's role,
and every failure turned into the one error shape (``configsvc.errors``)."""

from __future__ import annotations

import asyncio
from typing import Final

from aiohttp import web

from configsvc.errors import (
    ConfigsvcError,
    MethodNotAllowed,
    MisdirectedRequest,
    UnknownEndpoint,
    spec_for,
)
from configsvc.http.access import READ_METHODS, also_accepted, required_role
from configsvc.http.handlers import (
    AUTH_KEY,
    HOSTS_KEY,
    IDENTITY_KEY,
    SELF_AUTHENTICATED_KEY,
    Handler,
)
from holdfast.errorshape import error_body
from holdfast.logs import (
    REQUEST_ID_HEADER,
    bind_request_id,
    clear_request_id,
    get_logger,
    request_id_from,
)
from holdfast.net.hostcheck import host_allowed

log = get_logger(__name__)

OPEN_PATHS: Final = frozenset({"/healthz"})


def _self_authenticated(request: web.Request, resource: object, pattern: str) -> bool:
    """A route (never an unknown path) under a prefix whose handlers authenticate themselves."""
    if resource is None:
        return False
    prefixes = request.app.get(SELF_AUTHENTICATED_KEY, ())
    return any(pattern == p or pattern.startswith(p + "/") for p in prefixes)


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
    bound = bind_request_id(request_id)
    try:
        host = request.headers.get("Host")
        if not host_allowed(host, request.app[HOSTS_KEY]):
            log.warning("host_header_refused", path=request.path[:200])
            raise MisdirectedRequest(
                f"Host {host!r:.100} is not served here: use a loopback name or address, or "
                "start configsvc with --allowed-host"
            )
        resource = request.match_info.route.resource
        pattern = resource.canonical if resource is not None else request.path
        if request.path not in OPEN_PATHS and not _self_authenticated(request, resource, pattern):
            request[IDENTITY_KEY] = request.app[AUTH_KEY].check(
                mutation=request.method not in READ_METHODS,
                remote=request.remote,
                headers=request.headers,
                required=required_role(request.method, pattern),
                also=also_accepted(request.method, pattern),
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
        clear_request_id(bound)
    response.headers[REQUEST_ID_HEADER] = request_id
    return response
