"""Plain values that cross the store boundary (no etcd client types leak out)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


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
    """One watch event. ``value`` is empty for deletes."""

    kind: Literal["put", "delete"]
    key: str
    value: bytes
    mod_revision: int


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
