"""Tier 3: the store contract (tests/store_contract.py) against EtcdStore and a real etcd.

The unit tier runs the same cases against MemoryStore; a case failing in only one of the two
means the fake and etcd disagree.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from holdfast.store import StoreError
from holdfast.store.etcd import EtcdStore
from holdfast_devtools.etcd_host import EtcdError, etcd_binary
from holdfast_devtools.etcd_local import EtcdNode
from tests.store_contract import CASES, ContractCase, Env

pytestmark = pytest.mark.etcd


@pytest.fixture(scope="module")
def contract_node() -> Iterator[EtcdNode]:
    """A node of this module's own: no other test writes to it, so cases may count revisions."""
    try:
        etcd_binary()
    except EtcdError as exc:  # fail loudly, as tests/conftest.py does: skipped is not green
        pytest.fail(str(exc), pytrace=False)
    with EtcdNode("contract") as node:
        yield node


def etcd_env(store: EtcdStore, node: EtcdNode) -> Env:
    async def outage() -> None:
        await asyncio.to_thread(node.stop)

    async def recover() -> None:
        await asyncio.to_thread(lambda: node.start().wait_ready())
        deadline = time.monotonic() + 10
        while True:  # the client reconnects on its own, after its backoff
            try:
                await store.revision()
                return
            except StoreError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)

    return Env(
        store=store,
        prefix=f"/contract/{secrets.token_hex(4)}/",
        elapse=asyncio.sleep,
        outage=outage,
        recover=recover,
    )


@pytest.fixture
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    contract: ContractCase = request.param
    fixture = "fresh_etcd" if contract.fresh else "contract_node"
    node: EtcdNode = request.getfixturevalue(fixture)
    store = EtcdStore([node.client_url], timeout=1.0 if contract.fresh else 5.0)
    try:
        await store.connect()
        yield etcd_env(store, node)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("env", "contract"), [(c, c) for c in CASES], ids=[c.name for c in CASES], indirect=["env"]
)
async def test_store_contract(env: Env, contract: ContractCase) -> None:
    await contract.run(env)
