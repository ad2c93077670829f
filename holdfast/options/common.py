"""Command-line values every Holdfast process parses the same way (``--listen``, ``--etcd``)."""

from __future__ import annotations

from typing import Final

ENV_ETCD: Final = "HOLDFAST_ETCD"
ENV_ENV: Final = "HOLDFAST_ENV"
DEFAULT_ETCD: Final = "http://127.0.0.1:2379"
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "::1", "localhost"})


def parse_listen(value: str, *, error: type[ValueError] = ValueError) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``; port 0 asks the kernel for a free one."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host:
        raise error(f"--listen {value!r}: expected HOST:PORT")
    if not port.isdigit():
        raise error(f"--listen {value!r}: port is not a number")
    if int(port) > 65535:
        raise error(f"--listen {value!r}: port out of range")
    return host, int(port)


def parse_endpoints(value: str, *, error: type[ValueError] = ValueError) -> tuple[str, ...]:
    """Comma-separated etcd endpoints, blanks dropped; at least one."""
    endpoints = tuple(e.strip() for e in value.split(",") if e.strip())
    if not endpoints:
        raise error("--etcd needs at least one endpoint")
    return endpoints
