"""The middleware that refuses hostile traffic before any handler runs.

The Host header is checked against DNS rebinding (421 misdirected_request) on every endpoint,
the admin ones (/status, /metrics, /healthz, /readyz, OFREP) included; proxied requests
(/v1/*, /tools/*) in flight beyond the limit get 503 ``overloaded`` with Retry-After, while the
on-call endpoints stay reachable under overload.
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from holdfast.logs import get_logger
from holdfast.net.hostcheck import allowed_hosts, host_allowed
from sidecar.errors import MisdirectedRequest, Overloaded
from sidecar.settings import SidecarSettings

log = get_logger(__name__)

CAPPED_PREFIXES: Final = ("/v1/", "/tools/")


class Guard:
    """Both checks, run by the one middleware before any handler (sidecar.http.app)."""

    def __init__(self, settings: SidecarSettings) -> None:
        limits = settings.limits
        self.hosts = allowed_hosts(settings.listen_host, limits.allowed_hosts)
        self.limit = limits.max_concurrent
        self.retry_after = str(limits.retry_after)
        self.current = 0  # proxied requests being served now (read by /status and tests)
        self.refused = 0

    def admit(self, request: web.Request) -> bool:
        """Raise when the request must be refused; True when it now counts as in flight (the
        caller must ``release`` it when done)."""
        header = request.headers.get("Host")
        if not host_allowed(header, self.hosts):
            log.warning("host_header_refused", path=request.path[:200])
            raise MisdirectedRequest(
                f"Host {header!r:.100} is not served here: use a loopback name or address, or "
                "start the sidecar with --allowed-host"
            )
        if not request.path.startswith(CAPPED_PREFIXES):
            return False
        if self.current >= self.limit:
            self.refused += 1
            err = Overloaded(
                f"the sidecar is serving {self.limit} requests already; retry in "
                f"{self.retry_after}s"
            )
            err.headers["Retry-After"] = self.retry_after
            raise err
        self.current += 1
        return True

    def release(self) -> None:
        self.current -= 1
