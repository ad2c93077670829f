"""Host-header check against DNS rebinding, for loopback admin and API listeners. Pure.

A browser tricked by a rebinding name (``evil.example`` -> 127.0.0.1) sends ``Host:
evil.example``; only loopback names and addresses, the listen host and hosts the operator
allowed are accepted. Ports are ignored (the socket already chose one).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Final

LOOPBACK_HOST_NAMES: Final = frozenset(
    {"localhost", "localhost.localdomain", "ip6-localhost", "127.0.0.1", "::1"}
)
WILDCARD_BINDS: Final = frozenset({"0.0.0.0", "::", ""})  # noqa: S104 - names, not binds


def host_name(header: str) -> str:
    """``Host`` header value without its port, lower-case, no brackets or trailing dot."""
    value = header.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def allowed_hosts(listen_host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    names = set(LOOPBACK_HOST_NAMES)
    if listen_host not in WILDCARD_BINDS:
        names.add(host_name(listen_host))
    names.update(host_name(h) for h in extra)
    return frozenset(names)


def host_allowed(header: str | None, allowed: frozenset[str]) -> bool:
    """Whether a request's Host header may reach this listener (absent: HTTP/1.0, allowed)."""
    if header is None:
        return True
    name = host_name(header)
    if name in allowed:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
