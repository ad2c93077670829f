"""The middleware that refuses hostile traffic before any handler runs.

The Host header is checked against DNS rebinding (421 misdirected_request) on every endpoint,
the admin ones (/status, /metrics, /healthz, /readyz, OFREP) included; proxied requests
(/v1/*, /tools/*) in flight beyond the limit get 503 ``overloaded`` with Retry-After, while the
on-call endpoints stay reachable under overload.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from holdfast.logs import get_logger
from holdfast.net.hostcheck import allowed_hosts, host_allowed
from sidecar.errors import MisdirectedRequest, Overloaded
from sidecar.settings import SidecarSettings

log = get_logger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CAPPED_PREFIXES: Final = ("/v1/", "/tools/")


class InFlight:
    """Proxied requests being served now (read by /status and tests)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.current = 0
        self.refused = 0


def guard_middlewares(settings: SidecarSettings, in_flight: InFlight | None = None) -> list[object]:
    limits = settings.limits
    hosts = allowed_hosts(settings.listen_host, limits.allowed_hosts)
    gauge = in_flight if in_flight is not None else InFlight(limits.max_concurrent)
    retry_after = str(limits.retry_after)

    # One middleware for both checks: every layer is a coroutine frame on each request.
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Host")
        if not host_allowed(header, hosts):
            log.warning("host_header_refused", path=request.path[:200])
            raise MisdirectedRequest(
                f"Host {header!r:.100} is not served here: use a loopback name or address, or "
                "start the sidecar with --allowed-host"
            )
        if not request.path.startswith(CAPPED_PREFIXES):
            return await handler(request)
        if gauge.current >= gauge.limit:
            gauge.refused += 1
            err = Overloaded(
                f"the sidecar is serving {gauge.limit} requests already; retry in {retry_after}s"
            )
            err.headers["Retry-After"] = retry_after
            raise err
        gauge.current += 1
        try:
            return await handler(request)
        finally:
            gauge.current -= 1

    return [guard]
