"""etcd access for both packages. Only ``holdfast.store.etcd`` imports the etcd client library."""

from holdfast.store.errors import (
    CasConflict,
    Compacted,
    LeaseNotFound,
    StoreError,
    StoreUnavailable,
)
from holdfast.store.types import Change, Endpoint, KeyValue, Put, TxnResult, parse_endpoint

__all__ = [
    "CasConflict",
    "Change",
    "Compacted",
    "Endpoint",
    "KeyValue",
    "LeaseNotFound",
    "Put",
    "StoreError",
    "StoreUnavailable",
    "TxnResult",
    "parse_endpoint",
]
