"""Plain values that cross the store boundary (no etcd client types leak out)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

DEFAULT_PORT: Final = 2379
# The one key a liveness probe reads (count only). It holds nothing; under etcd auth every
# Holdfast role may read it (holdfast.etcd_roles), so the probe works for each of them.
PROBE_KEY: Final = "/holdfast/"


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    create_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Change:
    """One watch event. ``value`` is empty and the last three fields are 0 for deletes; for puts
    they let a watcher keep full KeyValues without re-reading the key."""

    kind: Literal["put", "delete"]
    key: str
    value: bytes
    mod_revision: int
    create_revision: int = 0
    version: int = 0
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Put:
    """A put inside a transaction; ``expected_mod_revision`` guards it (0: must not exist,
    None: unconditional)."""

    key: str
    value: bytes
    expected_mod_revision: int | None = None
    lease: int = 0


@dataclass(frozen=True, slots=True)
class TxnResult:
    revision: int


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One etcd client endpoint, validated (see ``parse_endpoint``)."""

    url: str
    target: str  # host:port, as gRPC wants it
    tls: bool = False  # https:// endpoints speak TLS


def parse_endpoint(url: str) -> Endpoint:
    """Validate one ``http(s)://host[:port]`` endpoint; ValueError says what is wrong."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"etcd endpoint {url!r} is not of the form http(s)://host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"etcd endpoint {url!r} must not have a path, query or credentials")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ValueError(f"etcd endpoint {url!r}: {exc}") from exc
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    tls = parts.scheme == "https"
    return Endpoint(url=f"{parts.scheme}://{host}:{port}", target=f"{host}:{port}", tls=tls)


def kv_from_change(c: Change) -> KeyValue:
    """The key-value a put event leaves behind."""
    return KeyValue(c.key, c.value, c.mod_revision, c.create_revision, c.version, c.lease)
