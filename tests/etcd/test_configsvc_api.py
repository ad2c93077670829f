"""configsvc's HTTP API served on a loopback port over a real etcd."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from configsvc.audit import ConfigStore
from configsvc.http.auth import Authorizer
from configsvc.releases.ops import ConfigService
from configsvc.releases.payloads import SetStable
from configsvc.server.app import build_app
from configsvc.server.run import finalize_leftovers, start_site
from holdfast.keyspace import AuditEntry, Keyspace
from holdfast.store import KeyValue, Put, StoreUnavailable, TxnResult
from holdfast.store.etcd import EtcdStore
from holdfast_devtools.etcd_local import EtcdNode

pytestmark = pytest.mark.etcd

TOKEN = "test-token-0123456789"
AGENT = "support"
BASE_URL = "http://127.0.0.1:9/v1"


@dataclass
class Api:
    url: str
    http: aiohttp.ClientSession
    store: EtcdStore
    keyspace: Keyspace

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = TOKEN,
        actor: str = "alice",
        data: bytes | None = None,
    ) -> tuple[int, dict[str, Any]]:
        headers = {"X-Holdfast-Actor": actor}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            data = json.dumps(body).encode()
        async with self.http.request(method, self.url + path, data=data, headers=headers) as r:
            return r.status, await r.json()

    async def release(self, name: str, model: str = "m-1", agent: str = AGENT) -> None:
        status, body = await self.call(
            "POST",
            f"/v1/agents/{agent}/releases",
            {"release": name, "model": model, "base_url": BASE_URL},
        )
        assert status == 201, body

    async def stable(
        self, release: str, *, token: str | None = TOKEN, **extra: Any
    ) -> tuple[int, dict[str, Any]]:
        return await self.call(
            "PUT", f"/v1/agents/{AGENT}/route/stable", {"release": release, **extra}, token=token
        )

    async def keys(self, kind: str) -> list[KeyValue]:
        return (await self.store.list_prefix(self.keyspace.kind_prefix(kind)))[1]


@asynccontextmanager
async def serving(
    endpoints: Sequence[str], env: str, *, token: str = TOKEN, store_timeout: float = 2.0
) -> AsyncIterator[Api]:
    store = EtcdStore(endpoints, timeout=store_timeout)
    await store.connect()
    keyspace = Keyspace(env)
    app = build_app(ConfigService(store, keyspace), Authorizer(token))
    runner, port = await start_site(app, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as http:
            yield Api(f"http://127.0.0.1:{port}", http, store, keyspace)
    finally:
        await runner.cleanup()
        await store.close()


@pytest.fixture
async def api(etcd_node: EtcdNode, etcd_env: str) -> AsyncIterator[Api]:
    async with serving([etcd_node.client_url], etcd_env) as served:
        yield served


async def test_healthz_and_request_id(api: Api) -> None:
    async with api.http.get(api.url + "/healthz", headers={"X-Request-Id": "abc123"}) as r:
        assert r.status == 200
        assert r.headers["X-Request-Id"] == "abc123"
        assert (await r.json())["status"] == "ok"


async def test_create_list_show_release(api: Api) -> None:
    status, body = await api.call(
        "POST",
        f"/v1/agents/{AGENT}/releases",
        {
            "release": "r1",
            "model": "gpt-4o-mini",
            "base_url": BASE_URL + "/",
            "api_key_env": "PROVIDER_KEY",
            "description": "first",
            "reason": "launch",
        },
    )
    assert status == 201
    created = body["release"]
    assert created["base_url"] == BASE_URL
    assert created["created_by"] == "token:alice"
    assert created["mod_revision"] > 0
    await api.release("r0", model="gpt-4.1")
    status, body = await api.call("GET", f"/v1/agents/{AGENT}/releases", token=None)
    assert status == 200
    assert [r["release"] for r in body["releases"]] == ["r0", "r1"]
    assert body["revision"] >= created["mod_revision"]
    status, body = await api.call("GET", f"/v1/agents/{AGENT}/releases/r1", token=None)
    assert status == 200
    assert body["release"] == created
    status, body = await api.call("GET", f"/v1/agents/{AGENT}/releases/r9")
    assert (status, body["error"]["code"]) == (404, "release_not_found")
    status, body = await api.call("GET", "/v1/agents/nobody/releases")
    assert (status, body["error"]["code"]) == (404, "agent_not_found")


async def test_releases_are_immutable(api: Api) -> None:
    await api.release("r1", model="m-1")
    revision = await api.store.revision()
    status, body = await api.call(
        "POST",
        f"/v1/agents/{AGENT}/releases",
        {"release": "r1", "model": "m-2", "base_url": BASE_URL},
    )
    assert (status, body["error"]["code"]) == (409, "release_exists")
    assert "release exists; releases are immutable" in body["error"]["message"]
    assert await api.store.revision() == revision
    _, body = await api.call("GET", f"/v1/agents/{AGENT}/releases/r1")
    assert body["release"]["model"] == "m-1"


async def test_set_stable_rollback_and_aliases(api: Api) -> None:
    for name in ("r1", "r2"):
        await api.release(name)
    status, body = await api.stable("r1", reason="start")
    assert status == 200
    assert (body["route"]["stable"], body["route"]["previous_stable"]) == ("r1", None)
    assert (body["changed"], body["before"]) == (True, None)
    status, body = await api.call("POST", f"/v1/agents/{AGENT}/route/rollback")
    assert (status, body["error"]["code"]) == (409, "no_previous_release")
    status, body = await api.stable("r2", reason="try r2")
    assert (body["route"]["stable"], body["route"]["previous_stable"]) == ("r2", "r1")
    status, body = await api.stable("r2")
    assert (status, body["changed"]) == (200, False)
    status, body = await api.call(
        "POST", f"/v1/agents/{AGENT}/route/rollback", {"reason": "bad answers"}
    )
    assert status == 200
    assert (body["route"]["stable"], body["route"]["previous_stable"]) == ("r1", "r2")
    status, body = await api.call(
        "PUT", f"/v1/agents/{AGENT}/route/aliases", {"aliases": ["gpt-4o", "helper"]}
    )
    assert (status, body["route"]["aliases"]) == (200, ["gpt-4o", "helper"])
    status, body = await api.call("GET", f"/v1/agents/{AGENT}/route", token=None)
    assert status == 200
    route = body["route"]
    assert (route["stable"], route["previous_stable"], route["aliases"]) == (
        "r1",
        "r2",
        ["gpt-4o", "helper"],
    )
    assert route["updated_by"] == "token:alice"
    kv = await api.store.get(api.keyspace.route(AGENT))
    assert kv is not None and body["mod_revision"] == kv.mod_revision


async def test_route_operations_need_an_existing_route(api: Api) -> None:
    await api.release("r1")
    for method, path, payload in (
        ("GET", "route", None),
        ("POST", "route/rollback", {}),
        ("PUT", "route/aliases", {"aliases": ["x"]}),
    ):
        status, body = await api.call(method, f"/v1/agents/{AGENT}/{path}", payload)
        assert (status, body["error"]["code"]) == (404, "agent_not_found"), path


async def test_unknown_release_is_404_and_nothing_is_written(api: Api) -> None:
    await api.release("r1")
    revision = await api.store.revision()
    status, body = await api.stable("nope")
    assert (status, body["error"]["code"], body["error"]["param"]) == (
        404,
        "release_not_found",
        None,
    )
    assert await api.store.revision() == revision
    assert await api.store.get(api.keyspace.route(AGENT)) is None


async def test_if_revision_guards_the_route(api: Api) -> None:
    for name in ("r1", "r2", "r3"):
        await api.release(name)
    status, body = await api.stable("r1", if_revision=0)  # 0: the route must not exist yet
    assert status == 200
    first = body["mod_revision"]
    status, body = await api.stable("r2", if_revision=0)
    assert (status, body["error"]["code"]) == (409, "revision_conflict")
    assert body["error"]["param"] == "if_revision"
    status, body = await api.stable("r2", if_revision=first)
    assert status == 200
    second = body["mod_revision"]
    revision = await api.store.revision()
    status, body = await api.stable("r3", if_revision=first)  # stale now
    assert status == 409
    assert f"at revision {second}, not {first}" in body["error"]["message"]
    assert await api.store.revision() == revision
    _, body = await api.call("GET", f"/v1/agents/{AGENT}/route")
    assert body["route"]["stable"] == "r2"


async def test_concurrent_set_stable_with_one_revision_has_one_winner(api: Api) -> None:
    names = [f"r{i}" for i in range(6)]
    for name in names:
        await api.release(name)
    _, body = await api.stable("r0")
    start = body["mod_revision"]
    results = await asyncio.gather(*(api.stable(n, if_revision=start) for n in names[1:]))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [409] * (len(names) - 2)
    winner = next(b["route"]["stable"] for s, b in results if s == 200)
    _, body = await api.call("GET", f"/v1/agents/{AGENT}/route")
    assert (body["route"]["stable"], body["route"]["previous_stable"]) == (winner, "r0")
    _, history = await api.call("GET", f"/v1/history?agent={AGENT}")
    assert [e["action"] for e in history["entries"]].count("route.set_stable") == 2


async def test_concurrent_set_stable_without_revision_retries(api: Api) -> None:
    names = ["r1", "r2", "r3"]
    for name in names:
        await api.release(name)
    results = await asyncio.gather(*(api.stable(n) for n in names))
    assert [s for s, _ in results] == [200, 200, 200]
    _, history = await api.call("GET", f"/v1/history?agent={AGENT}")
    changes = [e for e in history["entries"] if e["action"] == "route.set_stable"]
    assert len(changes) == 3
    chain = [(e["before"] or {}).get("stable") for e in reversed(changes)]
    assert chain[0] is None  # each change saw the one before it: no lost update
    assert chain[1:] == [e["after"]["stable"] for e in reversed(changes)][:-1]


async def test_mutations_need_the_token_reads_on_loopback_do_not(api: Api) -> None:
    await api.release("r1")
    revision = await api.store.revision()
    for token in (None, "wrong-token"):
        status, body = await api.stable("r1", token=token)
        assert (status, body["error"]["type"]) == (401, "authentication_error")
        status, body = await api.call(
            "POST",
            f"/v1/agents/{AGENT}/releases",
            {"release": "r2", "model": "m", "base_url": BASE_URL},
            token=token,
        )
        assert status == 401
    assert await api.store.revision() == revision
    async with api.http.put(api.url + f"/v1/agents/{AGENT}/route/stable") as r:
        assert r.status == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
    for path in (f"/v1/agents/{AGENT}/releases", "/v1/history", "/healthz"):
        status, _ = await api.call("GET", path, token=None)
        assert status == 200, path


async def test_bad_requests(api: Api) -> None:
    await api.release("r1")
    releases = f"/v1/agents/{AGENT}/releases"
    big = json.dumps({"release": "r2", "model": "m", "base_url": BASE_URL, "reason": "x" * 70_000})
    status, body = await api.call("POST", releases, data=big.encode())
    assert (status, body["error"]["code"]) == (413, "request_too_large")
    status, body = await api.call("POST", releases, data=b'{"release": ')
    assert (status, body["error"]["code"]) == (400, "invalid_request")
    assert "not valid JSON" in body["error"]["message"]
    status, body = await api.call(
        "POST", releases, {"release": "r2", "model": "m", "base_url": BASE_URL, "modle": "x"}
    )
    assert (status, body["error"]["param"]) == (400, "modle")
    status, body = await api.call(
        "POST", releases, {"release": "r2", "model": "bad model", "base_url": BASE_URL}
    )
    assert (status, body["error"]["param"]) == (400, "model")
    status, body = await api.call(
        "POST", releases, {"release": "r2", "model": "m", "base_url": "file:///etc"}
    )
    assert (status, body["error"]["param"]) == (400, "base_url")
    status, body = await api.call("GET", "/v1/agents/Bad_Agent/route")
    assert (status, body["error"]["param"]) == (400, "agent")
    status, body = await api.call("GET", "/v1/history?limit=0")
    assert (status, body["error"]["param"]) == (400, "limit")
    status, body = await api.call("GET", "/v1/nothing-here")
    assert (status, body["error"]["code"]) == (404, "unknown_url")
    status, body = await api.call("DELETE", f"/v1/agents/{AGENT}/route")
    assert (status, body["error"]["code"]) == (405, "method_not_allowed")
    status, body = await api.call("PUT", f"/v1/agents/{AGENT}/route/stable", actor="two words")
    assert (status, body["error"]["param"]) == (400, "X-Holdfast-Actor")
    assert len(await api.keys("releases")) == 1


async def test_etcd_down_is_503(fresh_etcd: EtcdNode, etcd_env: str) -> None:
    async with serving([fresh_etcd.client_url], etcd_env, store_timeout=1.0) as api:
        await api.release("r1")
        fresh_etcd.stop()
        status, body = await api.call("GET", f"/v1/agents/{AGENT}/route")
        assert (status, body["error"]["code"]) == (503, "store_unavailable")
        status, body = await api.stable("r1")  # its first read fails: nothing was written
        assert (status, body["error"]["code"]) == (503, "store_unavailable")
        assert "nothing was changed" in body["error"]["message"]
        status, body = await api.call(
            "POST",
            f"/v1/agents/{AGENT}/releases",
            {"release": "r2", "model": "m", "base_url": BASE_URL},
        )
        assert (status, body["error"]["code"]) == (503, "write_outcome_unknown")
        assert "holdfastctl history" in body["error"]["message"]
        status, body = await api.call("GET", "/v1/history")
        assert status == 503
        status, _ = await api.call("GET", "/healthz")
        assert status == 200


class CrashAfterMutation:
    """A store that 'crashes' between the two transactions: the finalizing one never runs."""

    def __init__(self, store: EtcdStore, keyspace: Keyspace) -> None:
        self.store = store
        self.pending_prefix = keyspace.kind_prefix("audit") + "pending/"

    async def get(self, key: str) -> KeyValue | None:
        return await self.store.get(key)

    async def list_prefix(self, prefix: str) -> tuple[int, list[KeyValue]]:
        return await self.store.list_prefix(prefix)

    async def txn(self, puts: Sequence[Put], deletes: Sequence[str] = ()) -> TxnResult:
        if any(d.startswith(self.pending_prefix) for d in deletes):
            raise StoreUnavailable("simulated crash before finalizing the audit entry")
        return await self.store.txn(puts, deletes)


async def test_pending_audit_entries_are_finalized_after_a_crash(api: Api) -> None:
    await api.release("r1")
    await api.release("r2")
    crashing: ConfigStore = CrashAfterMutation(api.store, api.keyspace)
    doomed = ConfigService(crashing, api.keyspace)
    change = await doomed.set_stable(AGENT, SetStable(release="r1", reason="crash 1"), "token:bob")
    pending = [kv for kv in await api.keys("audit") if "/pending/" in kv.key]
    assert [kv.mod_revision for kv in pending] == [change.mod_revision]
    assert await api.store.get(api.keyspace.audit(change.mod_revision)) is None

    # A history read (any configsvc replica) finalizes it under the mutation's revision.
    _, body = await api.call("GET", "/v1/history")
    newest = body["entries"][0]
    assert (newest["revision"], newest["reason"], newest["actor"]) == (
        change.mod_revision,
        "crash 1",
        "token:bob",
    )
    assert not [kv for kv in await api.keys("audit") if "/pending/" in kv.key]

    # And so does the next start-up.
    change = await doomed.set_stable(AGENT, SetStable(release="r2", reason="crash 2"), "token:bob")
    await finalize_leftovers(ConfigService(api.store, api.keyspace))
    kv = await api.store.get(api.keyspace.audit(change.mod_revision))
    assert kv is not None
    entry = AuditEntry.decode(kv.value)
    assert (entry.reason, entry.after and entry.after["stable"]) == ("crash 2", "r2")
    assert not [kv for kv in await api.keys("audit") if "/pending/" in kv.key]


async def test_history_newest_first_filtered_and_limited(api: Api) -> None:
    await api.release("r1")
    await api.release("r2")
    await api.release("x1", agent="other")
    await api.stable("r1", reason="one")
    await api.stable("r2", reason="two")
    status, body = await api.call("GET", "/v1/history", token=None)
    assert status == 200
    revisions = [e["revision"] for e in body["entries"]]
    assert revisions == sorted(revisions, reverse=True) and len(revisions) == 5
    assert [e["action"] for e in body["entries"]] == [
        "route.set_stable",
        "route.set_stable",
        "release.create",
        "release.create",
        "release.create",
    ]
    top = body["entries"][0]
    assert (top["target"], top["reason"], top["actor"], top["agent"]) == (
        f"routes/{AGENT}",
        "two",
        "token:alice",
        AGENT,
    )
    assert (top["before"]["stable"], top["after"]["stable"]) == ("r1", "r2")
    kv = await api.store.get(api.keyspace.route(AGENT))
    assert kv is not None and top["revision"] == kv.mod_revision
    _, body = await api.call("GET", "/v1/history?agent=other")
    assert [e["target"] for e in body["entries"]] == ["releases/other/x1"]
    _, body = await api.call("GET", f"/v1/history?agent={AGENT}&limit=2")
    assert [e["reason"] for e in body["entries"]] == ["two", "one"]


async def test_shutdown_closes_the_listener(etcd_node: EtcdNode, etcd_env: str) -> None:
    async with serving([etcd_node.client_url], etcd_env) as api:
        url = api.url
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(url + "/healthz")


def test_app_factory_has_the_documented_routes() -> None:
    app = build_app(ConfigService(None, Keyspace("dev")), Authorizer(TOKEN))  # type: ignore[arg-type]
    routes = {
        (r.method, r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    assert routes == {
        ("GET", "/healthz"),
        ("GET", "/v1/agents/{agent}/releases"),
        ("POST", "/v1/agents/{agent}/releases"),
        ("GET", "/v1/agents/{agent}/releases/{release}"),
        ("GET", "/v1/agents/{agent}/route"),
        ("PUT", "/v1/agents/{agent}/route/stable"),
        ("POST", "/v1/agents/{agent}/route/rollback"),
        ("PUT", "/v1/agents/{agent}/route/aliases"),
        ("GET", "/v1/history"),
    }
    assert isinstance(app, web.Application)
