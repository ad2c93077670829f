"""The one definition of the etcd keyspace and record formats; sidecar and configsvc share it."""

from holdfast.keyspace.codec import (
    MAX_RECORD_BYTES,
    SCHEMA_VERSION,
    RecordError,
    decode_record,
    encode_record,
)
from holdfast.keyspace.keys import (
    DEFAULT_ENV,
    ROOT,
    KeyError_,
    Keyspace,
    ParsedKey,
    validate_name,
)
from holdfast.keyspace.records import AuditEntry, Release, Route, record_from_kv

__all__ = [
    "DEFAULT_ENV",
    "MAX_RECORD_BYTES",
    "ROOT",
    "SCHEMA_VERSION",
    "AuditEntry",
    "KeyError_",
    "Keyspace",
    "ParsedKey",
    "RecordError",
    "Release",
    "Route",
    "decode_record",
    "encode_record",
    "record_from_kv",
    "validate_name",
]
