"""configsvc's limits against hostile input: server options, Host check, upstream allowlist.

One frozen object built from ``holdfastctl serve``'s command line (``add_serve_limit_options``
/ ``serve_limits_from``), carried as ``ServeSettings.limits``. The defaults are the sidecar's
too (``holdfast.net.listener``); the Host check (``holdfast.net.hostcheck``) and the upstream
allowlist (``holdfast.net.guard``) are the same code the sidecar runs. The limits of request
bodies are the handlers' (``configsvc.http.handlers``).

Light on purpose: ``holdfastctl`` loads this module for ``serve``'s options on every command.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from holdfast.net.guard import HostPolicy
from holdfast.net.hostcheck import allowed_hosts
from holdfast.net.listener import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_LINE_BYTES,
)


class ServeLimitsError(ValueError):
    """A limit that cannot be used; the message names the flag."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeLimits:
    max_headers: int = DEFAULT_MAX_HEADERS
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    allowed_hosts: tuple[str, ...] = ()  # extra Host header values (DNS rebinding check)
    upstream_hosts: tuple[str, ...] = ()  # --allow-upstream-host patterns; () = the default

    def __post_init__(self) -> None:
        if not 8 <= self.max_headers <= 1000:
            raise ServeLimitsError("--max-headers must be 8-1000")
        if not 1024 <= self.max_header_bytes <= 65536:
            raise ServeLimitsError("--max-header-bytes must be 1024-65536")
        if not 256 <= self.max_line_bytes <= 65536:
            raise ServeLimitsError("--max-request-line-bytes must be 256-65536")
        if not 0.5 <= self.idle_timeout <= 3600:
            raise ServeLimitsError("--idle-timeout must be 0.5-3600 seconds")
        if any(not h.strip() or len(h) > 253 for h in self.allowed_hosts):
            raise ServeLimitsError("--allowed-host needs a host name of 1-253 characters")
        try:
            self.host_policy()
        except ValueError as exc:
            raise ServeLimitsError(str(exc)) from exc

    def host_policy(self) -> HostPolicy:
        return HostPolicy(self.upstream_hosts)

    def accepted_hosts(self, listen_host: str) -> frozenset[str]:
        """Host header values the API answers (loopback names, the listen host, the extras)."""
        return allowed_hosts(listen_host, self.allowed_hosts)


def server_options(limits: ServeLimits) -> dict[str, Any]:
    """aiohttp server kwargs for ``web.AppRunner``.

    ``keepalive_timeout`` closes a connection that has not delivered a complete request head
    within that time of opening or of its previous response (idle or slowloris alike).
    """
    return {
        "max_headers": limits.max_headers,
        "max_field_size": limits.max_header_bytes,
        "max_line_size": limits.max_line_bytes,
        "keepalive_timeout": limits.idle_timeout,
    }


def add_serve_limit_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("limits and hostile input")
    g.add_argument("--max-headers", type=int, default=DEFAULT_MAX_HEADERS)
    g.add_argument("--max-header-bytes", type=int, default=DEFAULT_MAX_HEADER_BYTES)
    g.add_argument("--max-request-line-bytes", type=int, default=DEFAULT_MAX_LINE_BYTES)
    g.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        help="seconds a connection may stay idle or keep sending a request head (slowloris)",
    )
    g.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="HOST",
        help="Host header accepted besides loopback names and the listen host (repeatable; "
        "needed when operators reach a non-loopback listener by name)",
    )
    g.add_argument(
        "--allow-upstream-host",
        action="append",
        default=[],
        metavar="PATTERN",
        help="hosts a release base_url or contract backend may name: name, *.domain, IP, "
        "CIDR, loopback or * (repeatable; default: loopback and public addresses, never "
        "link-local/metadata)",
    )


def serve_limits_from(args: argparse.Namespace) -> ServeLimits:
    return ServeLimits(
        max_headers=args.max_headers,
        max_header_bytes=args.max_header_bytes,
        max_line_bytes=args.max_request_line_bytes,
        idle_timeout=args.idle_timeout,
        allowed_hosts=tuple(args.allowed_host),
        upstream_hosts=tuple(args.allow_upstream_host),
    )
