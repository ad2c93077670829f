"""Flags end to end: holdfastctl apply/get/list/history/kill/enable and route flag against real
configsvc and etcd, real sidecar processes serving OFREP and routing, stickiness across restarts,
STALE and refused writes with etcd down, file size limits, concurrent applies."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from configsvc import errors
from configsvc.flags.api import APPLY_BODY_BYTES
from configsvc.flags.ops import MAX_CAS_ATTEMPTS, FlagOps
from configsvc.releases.ops import ConfigService
from holdfast.flags.limits import MAX_FILE_BYTES
from holdfast.keyspace import Keyspace
from holdfast.store import KeyValue, Put, TxnResult
from holdfast.store.etcd import EtcdStore
from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import AGENT, Stack, start_stack, wait_for

FLAGS: dict[str, Any] = {
    "$evaluators": {"is_acme": {"==": [{"var": "tenant"}, "acme"]}},
    "flags": {
        "newPrompt": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": {"if": [{"$ref": "is_acme"}, "on", None]},
        },
        "split": {
            "state": "ENABLED",
            "variants": {"a": "A", "b": "B", "c": "C"},
            "defaultVariant": "a",
            "targeting": {"fractional": [["a", 34], ["b", 33], ["c", 33]]},
        },
    },
}
USERS = [f"user-{i}" for i in range(40)]
WRITERS = 5  # configsvc's CAS attempts: each writer can lose to every other at most once


async def evaluate(url: str, key: str, context: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{url}/ofrep/v1/evaluate/flags/{key}", json={"context": context}
        ) as resp:
            body: dict[str, Any] = await resp.json()
            return body


async def until(
    url: str, key: str, context: dict[str, Any], check: Any, timeout: float = 15
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            last = await evaluate(url, key, context)
            if check(last):
                return last
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out; last answer {last}")


async def splits(url: str) -> list[str]:
    return [(await evaluate(url, "split", {"targetingKey": u}))["variant"] for u in USERS]


async def test_flags_lifecycle(tmp_path: Path, fresh_etcd: EtcdNode, etcd_env: str) -> None:
    stack = start_stack(tmp_path, etcd_env, [fresh_etcd.client_url])
    try:
        stack.create_releases(("r1", "model-one"))
        stack.set_stable("r1")
        bad = tmp_path / "bad.json"
        bad.write_text(
            json.dumps(
                {
                    "flags": {
                        **FLAGS["flags"],
                        "x": {
                            "state": "ENABLED",
                            "variants": {"a": 1},
                            "targeting": {"$ref": "nope"},
                        },
                    }
                }
            )
        )
        refused = stack.ctl("flag", "apply", str(bad), check=False)
        assert refused.returncode != 0 and "unknown $ref" in refused.stderr
        assert "no flags defined" in stack.ctl("flag", "list").stdout  # nothing was written
        good = tmp_path / "flags.json"
        good.write_text(json.dumps(FLAGS))
        assert (
            "applied 2 flag(s)"
            in stack.ctl("flag", "apply", str(good), "--reason", "launch").stdout
        )
        assert "nothing changed" in stack.ctl("flag", "apply", str(good)).stdout
        listing = json.loads(stack.ctl("flag", "list", "--json").stdout)
        assert sorted(f["key"] for f in listing["flags"]) == ["newPrompt", "split"]

        sidecar = stack.start_sidecar([fresh_etcd.client_url], name="a")
        acme = {"targetingKey": "u1", "tenant": "acme"}
        await until(sidecar.url, "newPrompt", acme, lambda b: b.get("value") is True)
        before = await splits(sidecar.url)
        assert len(set(before)) == 3

        stack.ctl("flag", "kill", "newPrompt", "--reason", "incident")
        body = await until(sidecar.url, "newPrompt", acme, lambda b: b.get("reason") == "DISABLED")
        assert body["value"] is False
        history = stack.ctl("flag", "history", "newPrompt").stdout
        assert "flag.kill" in history and "flag.apply" in history
        stack.ctl("flag", "enable", "newPrompt")
        await until(sidecar.url, "newPrompt", acme, lambda b: b.get("reason") == "TARGETING_MATCH")

        sidecar.stop()  # stickiness across restarts: same users, same variants
        sidecar = stack.start_sidecar([fresh_etcd.client_url], name="a")
        await until(sidecar.url, "split", {"targetingKey": "u"}, lambda b: "variant" in b)
        assert await splits(sidecar.url) == before

        got = json.loads(stack.ctl("--json", "flag", "get", "newPrompt").stdout)["flag"]
        assert got["targeting"] == {"if": [{"==": [{"var": "tenant"}, "acme"]}, "on", None]}
        assert (got["state"], got["source"], got["type"]) == ("ENABLED", "flags.json", "boolean")
        shown = stack.ctl("flag", "get", "newPrompt").stdout
        assert "default variant: off" in shown and "off=false, on=true" in shown
        missing = stack.ctl("--json", "flag", "get", "nope", check=False)
        assert missing.returncode != 0 and '"code": "flag_not_found"' in missing.stdout

        fresh_etcd.stop()  # control plane down: last-known values, reason STALE
        body = await until(sidecar.url, "newPrompt", acme, lambda b: b.get("reason") == "STALE")
        assert (body["value"], body["variant"]) == (True, "on")
        assert await splits(sidecar.url) == before

        # ...writes are refused (503) and nothing is written...
        changed = tmp_path / "changed.json"
        changed.write_text(json.dumps({"flags": {"split": {**FLAGS["flags"]["split"],
                                                           "defaultVariant": "b"}}}))  # fmt: skip
        for args in (("flag", "apply", str(changed)), ("flag", "kill", "split")):
            refused = stack.ctl("--json", *args, check=False)
            assert refused.returncode != 0 and "store_unavailable" in refused.stdout, args

        # ...and a sidecar restarted during the outage serves the same variants from its snapshot
        sidecar.stop()
        sidecar = stack.start_sidecar([fresh_etcd.client_url], name="a")
        body = await until(sidecar.url, "newPrompt", acme, lambda b: b.get("reason") == "STALE")
        assert (body["value"], body["variant"]) == (True, "on")
        assert await splits(sidecar.url) == before

        fresh_etcd.start()
        after = json.loads(stack.ctl("--json", "flag", "get", "split").stdout)["flag"]
        assert (after["state"], after["default_variant"]) == ("ENABLED", "a")
        history = json.loads(stack.ctl("--json", "flag", "history", "split").stdout)
        assert [e["action"] for e in history["entries"]] == ["flag.apply"]
        assert history["complete"] is True
    finally:
        stack.stop()


def bool_flag(default: str = "off", **over: Any) -> dict[str, Any]:
    return {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": default,
            **over}  # fmt: skip


def hundred_flags() -> dict[str, Any]:
    """100 flags with one small rule each: a plain file of about 90 KB pretty-printed."""
    tenants = [f"tenant-{i:03d}" for i in range(8)]
    newer = {"sem_ver": [{"var": "version"}, ">=", "2.1.0"]}
    rule = {"if": [{"and": [{"in": [{"var": "tenant"}, tenants]}, newer]}, "on", "off"]}
    return {"flags": {f"feature-{i:03d}": bool_flag(targeting=rule, metadata={"team": "core"})
                      for i in range(100)}}  # fmt: skip


async def post_apply(stack: Stack, body: Any) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {stack.token}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{stack.svc.url}/v1/flags/apply", data=body, headers=headers) as r:
            return r.status, await r.json()


async def chat_release(url: str, session: str, tenant: str) -> str:
    body = {"model": AGENT, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"X-Holdfast-Session": session, "X-Holdfast-Tenant": tenant}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
            assert r.status == 200, await r.text()
            return r.headers["X-Holdfast-Release"]


async def test_file_sizes_get_route_flag_and_concurrent_applies(
    stack: Stack, etcd_node: EtcdNode, tmp_path: Path
) -> None:
    big = tmp_path / "hundred.json"
    big.write_text(json.dumps(hundred_flags(), indent=2))
    assert 64 * 1024 < big.stat().st_size < MAX_FILE_BYTES  # over the API's general body limit
    assert "applied 100 flag(s)" in stack.ctl("flag", "apply", str(big)).stdout

    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps(hundred_flags(), indent=2) + " " * MAX_FILE_BYTES)
    refused = stack.ctl("flag", "apply", str(huge), check=False)
    assert refused.returncode != 0 and f"larger than {MAX_FILE_BYTES} bytes" in refused.stderr
    over = json.dumps({"content": huge.read_text()[: MAX_FILE_BYTES + 1]}).encode()
    status, body = await post_apply(stack, over)  # what another client might send
    assert status == 413 and body["error"]["code"] == "request_too_large", body
    assert f"a flag file may be at most {MAX_FILE_BYTES} bytes" in body["error"]["message"]
    padding = b" " * APPLY_BODY_BYTES  # JSON whitespace: a body over the route's own bound
    status, body = await post_apply(stack, b'{"content": "x"' + padding + b"}")
    assert status == 413 and "request body is too large" in body["error"]["message"]

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: refused while reading
        yield b'{"content": "x"'
        for _ in range(APPLY_BODY_BYTES // (1 << 20) + 1):
            yield b" " * (1 << 20)
        yield b"}"

    status, body = await post_apply(stack, chunked())
    assert status == 413 and "request body is too large" in body["error"]["message"]
    listed = json.loads(stack.ctl("--json", "flag", "list").stdout)["flags"]
    assert len(listed) == 100  # the refused files wrote nothing

    # route flag: the CLI and PUT/DELETE /v1/agents/{agent}/route/flag, steering a real sidecar
    route_file = tmp_path / "route.json"
    route_file.write_text(json.dumps({"flags": {"model-route": {
        "state": "ENABLED", "variants": {"new": "r2", "old": "r1"}, "defaultVariant": "old",
        "targeting": {"if": [{"==": [{"var": "tenant"}, "acme"]}, "new", None]}}}}))  # fmt: skip
    stack.ctl("flag", "apply", str(route_file))
    out = stack.ctl("route", "flag", AGENT, "model-route", "--reason", "acme first").stdout
    assert out.strip() == f"{AGENT}: routes new sessions by flag model-route"
    assert "(unchanged)" in stack.ctl("route", "flag", AGENT, "model-route").stdout
    for args, code in (((AGENT, "no-such-flag"), "flag_not_found"),
                       (("nobody", "model-route"), "agent_not_found")):  # fmt: skip
        refused = stack.ctl("--json", "route", "flag", *args, check=False)
        assert refused.returncode != 0 and f'"code": "{code}"' in refused.stdout, refused.stdout
    usage = stack.ctl("route", "flag", AGENT, "model-route", "--clear", check=False)
    assert usage.returncode != 0 and "give FLAG, or --clear alone" in usage.stderr
    sidecar = stack.start_sidecar([etcd_node.client_url])
    await wait_for(f"{sidecar.url}/status", lambda b: (b.get("route") or {}).get("flag"))
    assert await chat_release(sidecar.url, "s-acme", "acme") == "r2"
    assert await chat_release(sidecar.url, "s-globex", "globex") == "r1"
    assert "routes without a flag" in stack.ctl("route", "flag", AGENT, "--clear").stdout
    await wait_for(f"{sidecar.url}/status", lambda b: not (b.get("route") or {}).get("flag"))
    assert await chat_release(sidecar.url, "s-acme-2", "acme") == "r1"
    assert await chat_release(sidecar.url, "s-acme", "acme") == "r2"  # its pin still wins
    actions = [e["action"] for e in json.loads(stack.ctl("--json", "history").stdout)["entries"]]
    assert actions[:2] == ["route.clear_flag", "route.set_flag"]

    # concurrent applies of one set of flags: each lands whole, none is lost
    def apply(i: int) -> dict[str, Any]:
        path = tmp_path / f"writer{i}.json"
        path.write_text(json.dumps({"flags": {f"shared-{k}": bool_flag(metadata={"writer": i})
                                              for k in range(10)}}))  # fmt: skip
        return dict(json.loads(stack.ctl("--json", "flag", "apply", str(path)).stdout))

    with ThreadPoolExecutor(WRITERS) as pool:
        results = list(pool.map(apply, range(WRITERS)))
    assert len({r["revision"] for r in results}) == WRITERS
    flags = json.loads(stack.ctl("--json", "flag", "list").stdout)["flags"]
    shared = [f for f in flags if f["key"].startswith("shared-")]
    assert len({f["metadata"]["writer"] for f in shared}) == 1  # one writer's file, whole
    applies = [
        e
        for e in json.loads(stack.ctl("--json", "flag", "history", "shared-0").stdout)["entries"]
        if e["action"] == "flag.apply"
    ]
    assert len(applies) == WRITERS


class Racing:
    """The real store, with a competing write slipped in before chosen transactions."""

    def __init__(self, store: EtcdStore) -> None:
        self.store = store
        self.before_txn: list[Callable[[], Awaitable[Any]]] = []
        self.txns = 0

    async def get(self, key: str) -> KeyValue | None:
        return await self.store.get(key)

    async def list_prefix(self, prefix: str) -> tuple[int, list[KeyValue]]:
        return await self.store.list_prefix(prefix)

    async def txn(self, puts: Sequence[Put], deletes: Sequence[str] = ()) -> TxnResult:
        self.txns += 1
        if self.before_txn:
            await self.before_txn.pop(0)()
        return await self.store.txn(puts, deletes)


def ops_over(store: Any, env: str) -> FlagOps:
    return FlagOps(ConfigService(store, Keyspace(env)))


def flag_doc(**flags: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    document = {"flags": flags}
    return document, json.dumps(document).encode()


async def apply(ops: FlagOps, document: tuple[dict[str, Any], bytes], actor: str) -> Any:
    return await ops.apply(document[0], source="f.json", raw=document[1], actor=actor, reason="")


async def test_cas_conflicts_are_retried_and_never_lose_a_change(
    store: EtcdStore, etcd_env: str
) -> None:
    racing = Racing(store)
    ops, rival = ops_over(racing, etcd_env), ops_over(store, etcd_env)
    await apply(ops, flag_doc(x=bool_flag(), y=bool_flag()), "alice")

    # an apply whose read is overtaken by another apply of a flag it changes: retried on the
    # new state, both audited
    racing.before_txn.append(lambda: apply(rival, flag_doc(y=bool_flag(metadata={"b": 1})), "bob"))
    txns = racing.txns
    done = await apply(ops, flag_doc(x=bool_flag(), y=bool_flag("on")), "alice")
    assert done.changed == ["y"] and done.unchanged == ["x"]
    assert racing.txns - txns == 3  # lost once, then written and its audit entry finalized
    assert (await ops.get("y")).record.spec.default_variant == "on"
    assert (await ops.history("y", 1)).entries[0]["before"]["metadata"] == {"b": 1}
    # a flag the file leaves as it is is not rewritten (nor guarded): a concurrent change stands
    racing.before_txn.append(lambda: apply(rival, flag_doc(x=bool_flag("on")), "bob"))
    await apply(ops, flag_doc(x=bool_flag(), y=bool_flag("off")), "alice")
    assert (await ops.get("x")).record.spec.default_variant == "on"

    # a kill overtaken by an apply: retried, so the kill does not undo the apply
    racing.before_txn.append(lambda: apply(rival, flag_doc(x=bool_flag(metadata={"v": 2})), "bob"))
    killed = await ops.set_state("x", "DISABLED", "carol", "incident")
    assert killed.record.spec.state == "DISABLED" and killed.record.spec.metadata == {"v": 2}
    history = await ops.history("x", 10)
    assert [(e["action"], e["actor"]) for e in history.entries] == [
        ("flag.kill", "carol"), ("flag.apply", "bob"), ("flag.apply", "bob"),
        ("flag.apply", "alice")]  # fmt: skip

    # a flag that keeps changing under every attempt: 409, and this writer wrote nothing
    def rival_apply(i: int) -> Callable[[], Awaitable[Any]]:
        return lambda: apply(rival, flag_doc(y=bool_flag(metadata={"n": i})), "bob")

    racing.before_txn.extend(rival_apply(i) for i in range(MAX_CAS_ATTEMPTS))
    with pytest.raises(errors.RevisionConflict):
        await apply(ops, flag_doc(y=bool_flag("on")), "alice")
    last = (await ops.history("y", 1)).entries[0]
    assert last["actor"] == "bob" and (await ops.get("y")).record.spec.metadata == {"n": 4}


async def test_history_pages_back_past_other_changes(store: EtcdStore, etcd_env: str) -> None:
    ops = ops_over(store, etcd_env)
    await apply(ops, flag_doc(old=bool_flag(), busy=bool_flag()), "alice")
    for i in range(6):  # newer audit entries that are not about "old"
        await ops.set_state("busy", "DISABLED" if i % 2 == 0 else "ENABLED", "bob", "")
    found = await ops.history("old", 5, page=2)
    assert [e["action"] for e in found.entries] == ["flag.apply"] and found.complete
    assert found.entries[0]["after"]["defaultVariant"] == "off"  # only this flag's part
    cut = await ops.history("old", 5, page=2, most=4)
    assert cut.entries == [] and cut.complete is False
    newest = await ops.history("busy", 2, page=2)
    assert [e["action"] for e in newest.entries] == ["flag.enable", "flag.kill"]
    assert newest.complete
