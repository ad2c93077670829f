"""Plain values that cross the store boundary (no etcd client types leak out)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
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


@dataclass(frozen=True, slots=True)
class KeyRange:
    """What a watch or a read covers: one exact key, or every key under a prefix.

    A prefix ends in ``/`` in Holdfast's keyspace, so ``routes/a`` (a key) never covers
    ``routes/ab``; ``KeyRange.prefix("routes/a")`` would.
    """

    key: str
    is_prefix: bool = True

    @classmethod
    def prefix(cls, prefix: str) -> KeyRange:
        return cls(prefix, True)

    @classmethod
    def exact(cls, key: str) -> KeyRange:
        if not key:
            raise ValueError("an exact key range needs a key")
        return cls(key, False)

    def contains(self, key: str) -> bool:
        return key.startswith(self.key) if self.is_prefix else key == self.key

    def overlaps(self, other: KeyRange) -> bool:
        if self.is_prefix and other.is_prefix:
            return self.key.startswith(other.key) or other.key.startswith(self.key)
        if self.is_prefix:
            return self.contains(other.key)
        return other.contains(self.key)

    def __str__(self) -> str:
        return f"{self.key}*" if self.is_prefix else self.key


def as_range(what: str | KeyRange) -> KeyRange:
    """A plain string is a prefix, as the store's calls always took it."""
    return what if isinstance(what, KeyRange) else KeyRange.prefix(what)


def check_disjoint(ranges: Sequence[KeyRange]) -> None:
    """ValueError if two ranges share a key: each key must have exactly one range to come from."""
    for i, a in enumerate(ranges):
        for b in ranges[i + 1 :]:
            if a.overlaps(b):
                raise ValueError(f"key ranges {a} and {b} overlap")


def key_dir(key: str) -> str:
    """A key's directory: the key up to and including its last ``/`` (its kind and owner)."""
    return key[: key.rfind("/") + 1]


# A consistent read of several ranges is one etcd transaction; etcd refuses more than
# --max-txn-ops (128 by default) operations in one.
MAX_RANGES_PER_READ: Final = 64
MAX_TRAFFIC_DIRS: Final = 512
OTHER_DIRS: Final = "(other)"


@dataclass(slots=True)
class Traffic:
    """What the store received from etcd: every response's bytes, and the keys that arrived
    (watch events and listed key-values), counted per key directory -- so a process can show
    which kinds and owners' keys reach it and what they cost, measured where they come in."""

    responses: int = 0
    bytes: int = 0
    keys: int = 0
    by_dir: dict[str, list[int]] = field(default_factory=dict)  # dir -> [keys, key+value bytes]

    def response(self, nbytes: int) -> None:
        self.responses += 1
        self.bytes += nbytes

    def key(self, key: str, value_bytes: int) -> None:
        self.keys += 1
        where = key_dir(key)
        counts = self.by_dir.get(where)
        if counts is None:
            if len(self.by_dir) >= MAX_TRAFFIC_DIRS:  # bounded, whatever the keyspace holds
                where = OTHER_DIRS
            counts = self.by_dir.setdefault(where, [0, 0])
        counts[0] += 1
        counts[1] += len(key) + value_bytes

    def to_json(self) -> dict[str, object]:
        return {
            "responses": self.responses,
            "bytes": self.bytes,
            "keys": self.keys,
            "by_dir": {d: {"keys": n, "bytes": b} for d, (n, b) in sorted(self.by_dir.items())},
        }


def kv_from_change(c: Change) -> KeyValue:
    """The key-value a put event leaves behind."""
    return KeyValue(c.key, c.value, c.mod_revision, c.create_revision, c.version, c.lease)
