"""Between the store's plain values and etcd's wire messages: keys, key-values, watch events.

Reads the messages by attribute only, so it needs no aetcd import; the caller passes the one enum
value it would need (``Event.DELETE``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from holdfast.store.types import Change, KeyValue


def encode_key(text: str) -> bytes:
    """A key as etcd stores it; surrogateescape lets any byte string round-trip through str."""
    return text.encode("utf-8", "surrogateescape")


def decode_key(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def prefix_end(prefix: bytes) -> bytes:
    """The ``range_end`` that makes a range request or watch cover every key under ``prefix``."""
    for i in reversed(range(len(prefix))):
        if prefix[i] < 0xFF:
            return prefix[:i] + bytes([prefix[i] + 1])
    return b"\0"  # empty or all-0xff prefix: to the end of the keyspace


def key_value(raw: Any) -> KeyValue:
    """A ``mvccpb.KeyValue`` message as the store's ``KeyValue``."""
    return KeyValue(
        key=decode_key(raw.key),
        value=bytes(raw.value),
        mod_revision=int(raw.mod_revision),
        create_revision=int(raw.create_revision),
        version=int(raw.version),
        lease=int(raw.lease),
    )


def change_batches(events: Any, delete: Any) -> Iterator[list[Change]]:
    """One watch response's events as lists of changes, one list per revision.

    ``delete`` is the event type that marks a deletion (aetcd's ``rpc.Event.DELETE``).
    """
    batch: list[Change] = []
    for event in events:
        kv = event.kv
        if event.type == delete:
            change = Change("delete", decode_key(kv.key), b"", int(kv.mod_revision))
        else:
            change = Change(
                "put", decode_key(kv.key), bytes(kv.value), int(kv.mod_revision),
                int(kv.create_revision), int(kv.version), int(kv.lease),
            )  # fmt: skip
        if batch and batch[-1].mod_revision != change.mod_revision:
            yield batch
            batch = []
        batch.append(change)
    if batch:
        yield batch
