"""etcd access for both packages. Only ``holdfast.store.etcd`` imports the etcd client library.

Code outside this package depends on the ``Store`` protocol; ``open_store`` (in
``holdfast.store.factory``) makes the etcd one for a process, ``holdfast.store.memory`` has an
in-memory one for unit tests.
"""

from holdfast.store.errors import (
    AuthFailed,
    CasConflict,
    Compacted,
    LeaseNotFound,
    PermissionDenied,
    StoreError,
    StoreUnavailable,
)
from holdfast.store.protocol import Store
from holdfast.store.types import (
    Change,
    Endpoint,
    KeyRange,
    KeyValue,
    Put,
    Traffic,
    TxnResult,
    parse_endpoint,
)

__all__ = [
    "AuthFailed",
    "CasConflict",
    "Change",
    "Compacted",
    "Endpoint",
    "KeyRange",
    "KeyValue",
    "LeaseNotFound",
    "PermissionDenied",
    "Put",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "Traffic",
    "TxnResult",
    "parse_endpoint",
]
