"""The one definition of the etcd keyspace and record formats; sidecar and configsvc share it."""

from holdfast.keyspace.codec import (
    MAX_RECORD_BYTES,
    SCHEMA_VERSION,
    RecordError,
    decode_record,
    encode_record,
)
from holdfast.keyspace.health import HealthSnapshot, ShadowStats
from holdfast.keyspace.keys import (
    DEFAULT_ENV,
    ROOT,
    KeyError_,
    Keyspace,
    ParsedKey,
    validate_name,
)
from holdfast.keyspace.pin import Pin
from holdfast.keyspace.records import AuditEntry, Release
from holdfast.keyspace.route import Rollout, Route, Shadow
from holdfast.keyspace.state_owner import StateOwner

__all__ = [
    "DEFAULT_ENV",
    "MAX_RECORD_BYTES",
    "ROOT",
    "SCHEMA_VERSION",
    "AuditEntry",
    "HealthSnapshot",
    "KeyError_",
    "Keyspace",
    "ParsedKey",
    "Pin",
    "RecordError",
    "Release",
    "Rollout",
    "Route",
    "Shadow",
    "ShadowStats",
    "StateOwner",
    "decode_record",
    "encode_record",
    "validate_name",
]
