"""msgpack framing of records: a schema version, a kind, strict and bounded decoding.

Evolution rule: adding optional fields keeps SCHEMA_VERSION; readers ignore fields they do not
know, so an old sidecar reads a newer configsvc's records during a rolling upgrade. A change an
old reader would misread bumps SCHEMA_VERSION, and old readers refuse those records (keeping
their previous value) instead of misapplying them.
"""

from __future__ import annotations

from typing import Any, Final

import msgpack

SCHEMA_VERSION: Final = 1
MAX_RECORD_BYTES: Final = 1 << 20  # below etcd's default 1.5 MiB request limit
MAX_DEPTH: Final = 32
MAX_CONTAINER_ITEMS: Final = 100_000
VERSION_FIELD: Final = "_v"
KIND_FIELD: Final = "_k"


class RecordError(ValueError):
    """A record that cannot be encoded or decoded; the message says why."""


def encode_record(kind: str, fields: dict[str, Any]) -> bytes:
    body = {VERSION_FIELD: SCHEMA_VERSION, KIND_FIELD: kind, **fields}
    try:
        data: bytes = msgpack.packb(body, use_bin_type=True, strict_types=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise RecordError(f"cannot encode {kind} record: {exc}") from exc
    if len(data) > MAX_RECORD_BYTES:
        raise RecordError(f"{kind} record is {len(data)} bytes, over the {MAX_RECORD_BYTES} limit")
    return data


def _check_depth(obj: dict[Any, Any]) -> None:
    # Only containers are walked (records are mostly numbers: health histograms); a container
    # at the limit may hold nothing, since what it holds would be one level deeper.
    stack: list[tuple[dict[Any, Any] | list[Any], int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if type(node) is dict:
            for key in node:
                if type(key) is not str:
                    raise RecordError(f"record has a non-string map key {key!r:.40}")
            children: Any = node.values()
        else:
            children = node
        if node and depth >= MAX_DEPTH:
            raise RecordError(f"record nests deeper than {MAX_DEPTH} levels")
        for value in children:
            kind = type(value)
            if kind is dict or kind is list:
                stack.append((value, depth + 1))


def decode_record(data: bytes, *, kind: str) -> dict[str, Any]:
    """Decode one record of the given kind, or raise RecordError; never returns a partial record."""
    if len(data) > MAX_RECORD_BYTES:
        raise RecordError(f"record is {len(data)} bytes, over the {MAX_RECORD_BYTES} limit")
    try:
        body = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_array_len=MAX_CONTAINER_ITEMS,
            max_map_len=MAX_CONTAINER_ITEMS,
            max_str_len=MAX_RECORD_BYTES,
            max_bin_len=MAX_RECORD_BYTES,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises a zoo of types on hostile input
        raise RecordError(f"not a msgpack record: {type(exc).__name__}: {exc}") from exc
    if not isinstance(body, dict):
        raise RecordError(f"record is a {type(body).__name__}, expected a map")
    _check_depth(body)
    version = body.pop(VERSION_FIELD, None)
    found_kind = body.pop(KIND_FIELD, None)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RecordError(f"record has no valid schema version (got {version!r:.40})")
    if version > SCHEMA_VERSION:
        raise RecordError(
            f"record schema version {version} is newer than this reader's {SCHEMA_VERSION}; "
            "upgrade this process"
        )
    if found_kind != kind:
        raise RecordError(f"record kind is {found_kind!r:.40}, expected {kind!r}")
    return body
