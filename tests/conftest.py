"""Shared fixtures. The etcd ones run real etcd processes (tier 3); nothing here mocks etcd."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest

from holdfast.store.etcd import EtcdStore
from holdfast_devtools.etcd_cluster import EtcdCluster
from holdfast_devtools.etcd_host import PORT_RANGE_ENV, EtcdError, etcd_binary
from holdfast_devtools.etcd_local import EtcdNode

# Below the kernel's ephemeral ports (32768 up by default), so no port a process gets by binding
# port 0 is ever one etcd was told to take.
_ETCD_PORTS = (12000, 31999)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs two workers) each worker picks etcd's ports from
    its own range: two workers choosing the same free port a moment apart would otherwise
    start two etcds on it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    if worker is None:
        return
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker.removeprefix("gw"))
    low, high = _ETCD_PORTS
    span = (high - low + 1) // count
    os.environ[PORT_RANGE_ENV] = f"{low + index * span}-{low + (index + 1) * span - 1}"


def _require_etcd() -> None:
    # A missing binary fails loudly: a silently skipped tier 3 looks like a green one.
    try:
        etcd_binary()
    except EtcdError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def etcd_node() -> Iterator[EtcdNode]:
    """One etcd shared by the whole session; tests isolate themselves with ``etcd_env``."""
    _require_etcd()
    with EtcdNode("shared") as node:
        yield node


@pytest.fixture
def etcd_env() -> str:
    """A keyspace environment name no other test uses, e.g. ``t1a2b3c4d``."""
    return "t" + secrets.token_hex(4)


@pytest.fixture
def fresh_etcd() -> Iterator[EtcdNode]:
    """A dedicated node for destructive tests (restarts, compaction)."""
    _require_etcd()
    with EtcdNode("fresh") as node:
        yield node


@pytest.fixture
def etcd_cluster() -> Iterator[EtcdCluster]:
    """A dedicated 3-member cluster; tests may kill members."""
    _require_etcd()
    with EtcdCluster(3) as cluster:
        yield cluster


@pytest.fixture
async def store(etcd_node: EtcdNode) -> AsyncIterator[EtcdStore]:
    etcd = EtcdStore([etcd_node.client_url])
    await etcd.connect()
    yield etcd
    await etcd.close()
