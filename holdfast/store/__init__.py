"""etcd access for both packages. Only ``holdfast.store.etcd`` imports the etcd client library."""

from holdfast.store.errors import (
    CasConflict,
    Compacted,
    StoreError,
    StoreUnavailable,
)
from holdfast.store.types import Change, KeyValue, Put, TxnResult

__all__ = [
    "CasConflict",
    "Change",
    "Compacted",
    "KeyValue",
    "Put",
    "StoreError",
    "StoreUnavailable",
    "TxnResult",
]
