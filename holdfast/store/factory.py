"""The store a process talks to: etcd at the given endpoints, behind the ``Store`` protocol.

The wiring of the sidecar and configsvc calls this, so nothing outside ``holdfast.store`` needs
the concrete adapter (or, through it, the etcd client library).
"""

from __future__ import annotations

from collections.abc import Sequence

from holdfast.store.etcd import EtcdStore
from holdfast.store.failover import DEFAULT_TIMEOUT
from holdfast.store.protocol import Store
from holdfast.store.security import EtcdSecurity


def open_store(
    endpoints: Sequence[str],
    *,
    security: EtcdSecurity | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> Store:
    """An etcd store for ``endpoints`` (``http(s)://host[:port]``); connects on first use.

    ValueError if an endpoint, the scheme mix or the TLS files are wrong.
    """
    return EtcdStore(endpoints, security=security, timeout=timeout)
