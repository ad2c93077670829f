"""The sidecar's limits against oversized, slow and hostile input: settings, flags, defaults.

One frozen object, built from the command line (``add_limit_options`` / ``limits_from``) and
carried as ``SidecarSettings.limits``; ``server_options`` turns it into aiohttp server kwargs.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any, Final

from holdfast.json_limits import DEFAULT_MAX_JSON_DEPTH, MAX_JSON_DEPTH, MIN_JSON_DEPTH
from holdfast.net.guard import HostPolicy
from holdfast.net.listener import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_LINE_BYTES,
)

DEFAULT_MAX_CONCURRENT: Final = 512
DEFAULT_RETRY_AFTER: Final = 1


class LimitsError(ValueError):
    """A limit that cannot be used; the message names the flag."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LimitSettings:
    max_headers: int = DEFAULT_MAX_HEADERS
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    max_concurrent: int = DEFAULT_MAX_CONCURRENT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    retry_after: int = DEFAULT_RETRY_AFTER
    allowed_hosts: tuple[str, ...] = ()  # extra Host header values (DNS rebinding check)
    upstream_hosts: tuple[str, ...] = ()  # --allow-upstream-host patterns; () = the default

    def __post_init__(self) -> None:
        if not 8 <= self.max_headers <= 1000:
            raise LimitsError("--max-headers must be 8-1000")
        if not 1024 <= self.max_header_bytes <= 65536:
            raise LimitsError("--max-header-bytes must be 1024-65536")
        if not 256 <= self.max_line_bytes <= 65536:
            raise LimitsError("--max-request-line-bytes must be 256-65536")
        if not MIN_JSON_DEPTH <= self.max_json_depth <= MAX_JSON_DEPTH:
            raise LimitsError(f"--max-json-depth must be {MIN_JSON_DEPTH}-{MAX_JSON_DEPTH}")
        if self.max_concurrent < 1:
            raise LimitsError("--max-concurrent-requests must be at least 1")
        if not 0.5 <= self.idle_timeout <= 3600:
            raise LimitsError("--idle-timeout must be 0.5-3600 seconds")
        if not 1 <= self.retry_after <= 3600:
            raise LimitsError("--overload-retry-after must be 1-3600 seconds")
        try:
            self.host_policy()
        except ValueError as exc:
            raise LimitsError(str(exc)) from exc

    def host_policy(self) -> HostPolicy:
        return HostPolicy(self.upstream_hosts)


def server_options(limits: LimitSettings) -> dict[str, Any]:
    """aiohttp server kwargs (``web.AppRunner(app, **server_options(...))``).

    aiohttp closes a connection that has not delivered a complete request head within
    ``keepalive_timeout`` of opening or of its previous response, whether it is silent or
    dribbling bytes (slowloris): the idle timeout is also the header-read deadline.
    """
    return {
        "max_headers": limits.max_headers,
        "max_field_size": limits.max_header_bytes,
        "max_line_size": limits.max_line_bytes,
        "keepalive_timeout": limits.idle_timeout,
    }


def add_limit_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("limits and hostile input")
    g.add_argument("--max-headers", type=int, default=DEFAULT_MAX_HEADERS)
    g.add_argument("--max-header-bytes", type=int, default=DEFAULT_MAX_HEADER_BYTES)
    g.add_argument("--max-request-line-bytes", type=int, default=DEFAULT_MAX_LINE_BYTES)
    g.add_argument("--max-json-depth", type=int, default=DEFAULT_MAX_JSON_DEPTH)
    g.add_argument(
        "--max-concurrent-requests",
        type=int,
        default=DEFAULT_MAX_CONCURRENT,
        help="proxied requests in flight; more get 503 with Retry-After (default %(default)s)",
    )
    g.add_argument(
        "--idle-timeout",
        type=float,
        default=DEFAULT_IDLE_TIMEOUT,
        help="seconds a connection may stay idle or keep sending a request head (slowloris)",
    )
    g.add_argument("--overload-retry-after", type=int, default=DEFAULT_RETRY_AFTER)
    g.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="HOST",
        help="Host header accepted besides loopback names and the listen host (repeatable)",
    )
    g.add_argument(
        "--allow-upstream-host",
        action="append",
        default=[],
        metavar="PATTERN",
        help="provider/tool backend hosts: name, *.domain, IP, CIDR, loopback or * "
        "(repeatable; default: loopback and public addresses, never link-local/metadata)",
    )


def limits_from(args: argparse.Namespace) -> LimitSettings:
    return LimitSettings(
        max_headers=args.max_headers,
        max_header_bytes=args.max_header_bytes,
        max_line_bytes=args.max_request_line_bytes,
        max_json_depth=args.max_json_depth,
        max_concurrent=args.max_concurrent_requests,
        idle_timeout=args.idle_timeout,
        retry_after=args.overload_retry_after,
        allowed_hosts=tuple(args.allowed_host),
        upstream_hosts=tuple(args.allow_upstream_host),
    )
