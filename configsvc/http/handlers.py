"""What every concern's handlers share: reading a bounded body, the path's names, the audit
actor, the upstream allowlist, and the one JSON reply.

``server.app.build_app`` stores the authorizer, the body limit, the accepted hosts and the
upstream policy on the application under the keys below; the middleware (``http.middleware``)
and these helpers read them from there, so a handler needs nothing but its request.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from configsvc.errors import BodyTooLarge, UpstreamRefused
from configsvc.http.auth import Authorizer
from configsvc.http.payloads import name
from configsvc.http.tokens import Identity
from holdfast.logs import get_logger
from holdfast.net.guard import HostPolicy, HostRefused

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
AUTH_KEY: Final = web.AppKey("authorizer", Authorizer)
BODY_LIMIT_KEY: Final = web.AppKey("body_limit", int)
HOSTS_KEY: Final = web.AppKey("hosts", frozenset[str])
UPSTREAM_KEY: Final = web.AppKey("upstream_policy", HostPolicy)
IDENTITY_KEY: Final = web.RequestKey("identity", Identity)
# Path prefixes whose handlers check who is asking themselves (the console: a browser sends a
# session cookie, not a bearer header); the middleware leaves them alone.
SELF_AUTHENTICATED_KEY: Final = web.AppKey("self_authenticated", tuple[str, ...])
READ_CHUNK: Final = 64 * 1024


async def read_body(request: web.Request) -> bytes:
    """The whole body, at most the API's general limit (413 beyond it)."""
    limit = request.app[BODY_LIMIT_KEY]
    too_large = BodyTooLarge(f"request body is larger than {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise too_large from exc


async def read_document(request: web.Request, *, limit: int, too_large: str) -> bytes:
    """The whole body of a document upload (a flag file, a contract's schemas, a prompt and its
    cases), which may exceed the general limit: at most ``limit`` bytes, chunked bodies
    included; larger ones are refused (413) with ``too_large``, which names the route's own
    documented limit, before more than ``limit`` bytes are read."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge(too_large)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(READ_CHUNK):
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(too_large)
        chunks.append(chunk)
    return b"".join(chunks)


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


def agent_of(request: web.Request) -> str:
    """The ``{agent}`` of the path, checked (400 naming ``agent`` otherwise)."""
    return name(request.match_info["agent"], what="agent", param="agent")


def release_of(request: web.Request) -> str:
    """The ``{release}`` of the path, checked (400 naming ``release`` otherwise)."""
    return name(request.match_info["release"], what="release", param="release")


def actor_of(request: web.Request) -> str:
    """The audit actor of a request: the authenticated subject and the operator's name."""
    return request.app[AUTH_KEY].actor(request.headers, request.get(IDENTITY_KEY))


def reply(data: dict[str, Any], status: int = 200) -> web.Response:
    """The API's JSON answer, keys sorted so that equal bodies are equal bytes."""
    return web.json_response(data, status=status, dumps=lambda o: json.dumps(o, sort_keys=True))
