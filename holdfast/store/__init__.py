"""etcd access for both packages. Only ``holdfast.store.etcd`` imports the etcd client library."""

from holdfast.store.errors import (
    AuthFailed,
    CasConflict,
    Compacted,
    LeaseNotFound,
    PermissionDenied,
    StoreError,
    StoreUnavailable,
)
from holdfast.store.types import Change, Endpoint, KeyValue, Put, TxnResult, parse_endpoint

__all__ = [
    "AuthFailed",
    "CasConflict",
    "Change",
    "Compacted",
    "Endpoint",
    "KeyValue",
    "LeaseNotFound",
    "PermissionDenied",
    "Put",
    "StoreError",
    "StoreUnavailable",
    "TxnResult",
    "parse_endpoint",
]
