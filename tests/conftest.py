"""Shared fixtures. The etcd ones run real etcd processes (tier 3); nothing here mocks etcd."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import pytest

from holdfast.store.etcd import EtcdStore
from holdfast_devtools.etcd_cluster import EtcdCluster
from holdfast_devtools.etcd_host import EtcdError, etcd_binary
from holdfast_devtools.etcd_local import EtcdNode


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
