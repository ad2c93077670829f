"""etcd over mutual TLS with etcd's auth on and Holdfast's role layout (holdfast.etcd_roles).

One TLS+auth etcd for the module: configsvc runs as its own etcd user and is driven through the
real holdfastctl; a sidecar process runs as its agent's user, serves, and writes its pins and
health; that same user is refused configuration writes with a translated PermissionDenied.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from holdfast.etcdauth import roles as etcd_roles
from holdfast.keyspace import Keyspace
from holdfast.store import AuthFailed, PermissionDenied
from holdfast.store.etcd import EtcdStore
from holdfast_devtools import procs
from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import AGENT, KEY_VAR, Stack, stable_is, wait_for

ENV = "tlsauth"
PASSWORDS = {
    etcd_roles.configsvc_user(ENV): secrets.token_hex(12),
    etcd_roles.sidecar_user(ENV, AGENT): secrets.token_hex(12),
    etcd_roles.sidecar_user(ENV, "other"): secrets.token_hex(12),
}
ROOT_PASSWORD = secrets.token_hex(12)


@pytest.fixture(scope="module")
def secure_etcd() -> Iterator[EtcdNode]:
    with EtcdNode(tls=True) as node:
        node.enable_auth(ENV, [AGENT, "other"], PASSWORDS, ROOT_PASSWORD)
        yield node


def tls_args(node: EtcdNode, user: str) -> list[str]:
    assert node.pki is not None
    return [
        "--etcd-ca", str(node.pki.ca), "--etcd-cert", str(node.pki.client.cert),
        "--etcd-key", str(node.pki.client.key), "--etcd-user", user,
    ]  # fmt: skip


def store_as(node: EtcdNode, user: str, password: str) -> EtcdStore:
    return EtcdStore([node.client_url], timeout=3.0, security=node.security(user, password))


async def test_a_plain_client_is_refused_by_mutual_tls(secure_etcd: EtcdNode) -> None:
    assert secure_etcd.client_url.startswith("https://")
    no_cert = EtcdStore([secure_etcd.client_url], timeout=1.0)  # system roots, no client cert
    try:
        with pytest.raises(Exception, match="etcd"):
            await no_cert.revision()
    finally:
        await no_cert.close()


async def test_wrong_password_is_a_clear_auth_failure(secure_etcd: EtcdNode) -> None:
    store = store_as(secure_etcd, etcd_roles.sidecar_user(ENV, AGENT), "not-the-password")
    try:
        with pytest.raises(AuthFailed, match="authentication as user") as caught:
            await store.revision()
        assert "not-the-password" not in str(caught.value)
    finally:
        await store.close()


async def test_sidecar_user_writes_only_its_own_keys(secure_etcd: EtcdNode) -> None:
    ks = Keyspace(ENV)
    user = etcd_roles.sidecar_user(ENV, AGENT)
    store = store_as(secure_etcd, user, PASSWORDS[user])
    try:
        await store.list_prefix(ks.prefix)  # reads the whole environment
        await store.put(ks.pin(AGENT, "s-1"), b"x")
        lease = await store.grant_lease(5)
        await store.put(ks.health(f"{AGENT}.host-1"), b"x", lease=lease)
        await store.put(ks.spend("global", f"{AGENT}.host-1.ab12"), b"x", lease=lease)
        await store.revoke_lease(lease)
        await store.put(ks.outcome("exp", f"{AGENT}.host-1"), b"x")
        for key in (
            ks.release(AGENT, "r9"),
            ks.route(AGENT),
            ks.flag("f"),
            ks.pin("other", "s-1"),
            ks.health("other.host-1"),
            ks.health("host-without-agent-prefix"),
            ks.spend(f"agent:{AGENT}", "other.host-1.ab12"),  # another agent's report
            ks.outcome("exp", "other.host-1"),
            ks.quotas(f"agent:{AGENT}"),  # only configsvc hands out slices
        ):
            with pytest.raises(PermissionDenied, match="permission denied"):
                await store.put(key, b"x")
        with pytest.raises(PermissionDenied):
            await store.list_prefix("/holdfast/otherenv/")
    finally:
        await store.close()


async def test_configsvc_and_sidecar_run_as_their_etcd_users(
    tmp_path: Path, secure_etcd: EtcdNode
) -> None:
    etcd = [secure_etcd.client_url]
    svc_user, side_user = etcd_roles.configsvc_user(ENV), etcd_roles.sidecar_user(ENV, AGENT)
    fake = procs.fakellm(tmp_path / "logs").start()
    token = secrets.token_hex(8)
    svc = procs.configsvc(tmp_path / "logs", etcd, ENV, token, *tls_args(secure_etcd, svc_user))
    svc.env["HOLDFAST_ETCD_PASSWORD"] = PASSWORDS[svc_user]
    svc.start()
    stack = Stack(base=tmp_path, env=ENV, fake=fake, svc=svc, token=token)
    try:
        stack.create_releases(("r1", "model-one"))
        stack.set_stable("r1")
        side = procs.sidecar(
            tmp_path / "logs", AGENT, etcd, ENV, tmp_path / "state",
            *tls_args(secure_etcd, side_user),
            extra_env={KEY_VAR: stack.provider_key, "HOLDFAST_ETCD_PASSWORD": PASSWORDS[side_user]},
        ).start()  # fmt: skip
        stack.sidecars.append(side)
        await wait_for(f"{side.url}/status", stable_is("r1"))
        body = {"model": AGENT, "messages": [{"role": "user", "content": "hi"}]}
        headers = {"X-Holdfast-Session": "tls-session-1"}
        async with aiohttp.ClientSession() as http:
            url = f"{side.url}/v1/chat/completions"
            async with http.post(url, json=body, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                assert resp.headers["X-Holdfast-Release"] == "r1"
        root = store_as(secure_etcd, etcd_roles.ROOT, ROOT_PASSWORD)
        ks = Keyspace(ENV)
        try:
            deadline = time.monotonic() + 10
            while True:
                pin = await root.get(ks.pin(AGENT, "tls-session-1"))
                _, health = await root.list_prefix(f"{ks.prefix}health/{AGENT}.")
                if pin is not None and health:
                    break
                assert time.monotonic() < deadline, "sidecar wrote no pin or health under auth"
                await asyncio.sleep(0.05)
        finally:
            await root.close()
        assert "etcd_authenticated" in (tmp_path / "logs").joinpath("sidecar.log").read_text()
    finally:
        stack.stop()
    for log in (tmp_path / "logs").glob("*.log"):
        text = log.read_text(errors="replace")
        for secret in (*PASSWORDS.values(), ROOT_PASSWORD):
            assert secret not in text, f"an etcd password leaked into {log.name}"
