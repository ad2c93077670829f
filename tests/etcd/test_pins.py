"""Pins list / show / migrate through the real CLI and ``holdfastctl serve`` over a real etcd.

Pins are written into etcd under a lease exactly as sidecars write them; a migration must keep
that lease, leave an audit entry per batch, and never touch a pin that moved or expired.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import aiohttp
import pytest

from configsvc.releases.ops import ConfigService
from configsvc.traffic.pins import BATCH, PinOps, Selection
from holdfast import bucketing
from holdfast.keyspace import Keyspace, Pin
from holdfast.store import KeyValue, Put, TxnResult
from holdfast.store.etcd import EtcdStore
from tests.etcd.spine_stack import AGENT, Stack

pytestmark = pytest.mark.etcd


async def write_pins(
    store: EtcdStore, keyspace: Keyspace, lease: int, release: str, sessions: Sequence[str]
) -> None:
    puts = [
        Put(
            keyspace.pin(AGENT, sid),
            Pin(agent=AGENT, session=sid, release=release, pinned_at=1e9, revision=7).encode(),
            lease=lease,
        )
        for sid in sessions
    ]
    for start in range(0, len(puts), 100):
        await store.txn(puts[start : start + 100])


async def ctl(stack: Stack, *args: str, check: bool = True) -> Any:
    result = await asyncio.to_thread(stack.ctl, "--json", *args, check=check)
    return json.loads(result.stdout)


async def pins_by_release(store: EtcdStore, keyspace: Keyspace) -> dict[str, list[KeyValue]]:
    found: dict[str, list[KeyValue]] = {}
    for kv in (await store.list_prefix(keyspace.pins_of(AGENT)))[1]:
        found.setdefault(Pin.decode(kv.value).release, []).append(kv)
    return found


async def test_list_show_and_migrate_keep_the_lease(stack: Stack, store: EtcdStore) -> None:
    keyspace = Keyspace(stack.env)
    lease = await store.grant_lease(120)
    on_r1 = [f"s-{i:04d}" for i in range(130)]
    await write_pins(store, keyspace, lease, "r1", on_r1)
    await write_pins(store, keyspace, lease, "r2", ["t-1", "t-2", "t-3"])

    listing = await ctl(stack, "pins", "list", AGENT, "--release", "r2")
    assert [p["session"] for p in listing["pins"]] == ["t-1", "t-2", "t-3"]
    assert listing["total"] == 3 and listing["pins"][0]["lease"] == lease
    listing = await ctl(stack, "pins", "list", AGENT, "--limit", "5")
    assert (len(listing["pins"]), listing["total"], listing["truncated"]) == (5, 133, True)
    human = (await asyncio.to_thread(stack.ctl, "pins", "list", AGENT, "--limit", "2")).stdout
    assert human.splitlines()[0].split()[:2] == ["SESSION", "RELEASE"]
    assert human.splitlines()[-1] == "2 of 133 pin(s)"
    shown = (await ctl(stack, "pins", "show", AGENT, "t-2"))["pin"]
    assert (shown["release"], shown["revision"], shown["migrated_from"]) == ("r2", 7, "")
    missing = await ctl(stack, "pins", "show", AGENT, "nope", check=False)
    assert missing["error"]["code"] == "pin_not_found"

    # half of r1's sessions, chosen by the sticky hash, in batches of at most BATCH
    chosen = {s for s in on_r1 if bucketing.selected(bucketing.MIGRATE, AGENT, s, 50)}
    moved = await ctl(
        stack, "pins", "migrate", AGENT, "--from", "r1", "--to", "r3", "--percent", "50",
        "--reason", "half to r3",
    )  # fmt: skip
    assert (moved["migrated"], moved["skipped"]) == (len(chosen), 0)
    assert len(moved["revisions"]) == -(-len(chosen) // BATCH)
    now = await pins_by_release(store, keyspace)
    assert {Pin.decode(kv.value).session for kv in now["r3"]} == chosen
    assert all(kv.lease == lease for kvs in now.values() for kv in kvs)  # TTL kept
    pin = Pin.decode(now["r3"][0].value)
    assert (pin.migrated_from, pin.migrated_by, pin.notified) == ("r1", "token:e2e", False)

    entries = (await ctl(stack, "history", "--agent", AGENT))["entries"]
    audits = [e for e in entries if e["action"] == "pins.migrate"]
    assert sorted(e["revision"] for e in audits) == sorted(moved["revisions"])
    assert sum(e["extra"]["count"] for e in audits) == len(chosen)
    assert {s for e in audits for s in e["extra"]["sessions"]} == chosen
    assert all(e["reason"] == "half to r3" and e["after"] == {"release": "r3"} for e in audits)

    # one session, by name
    other = sorted(set(on_r1) - chosen)[0]
    one = await ctl(
        stack, "pins", "migrate", AGENT, "--from", "r1", "--to", "r2", "--session", other
    )
    assert (one["migrated"], one["sessions"]) == (1, [other])
    again = await ctl(
        stack, "pins", "migrate", AGENT, "--from", "r1", "--to", "r2", "--session", other,
        check=False,
    )  # fmt: skip
    assert "is on 'r2' already" in again["error"]["message"]
    for args, code in (
        (("--from", "r1", "--to", "r9"), "release_not_found"),
        (("--from", "r1", "--to", "r1"), "invalid_request"),
        (("--from", "r1", "--to", "r2", "--percent", "101"), "invalid_request"),
        (("--from", "r1", "--to", "r2", "--session", "ghost"), "pin_not_found"),
    ):
        body = await ctl(stack, "pins", "migrate", AGENT, *args, check=False)
        assert body["error"]["code"] == code, (args, body)

    # switch --migrate: every pin not on the new stable follows it
    switched = await ctl(stack, "switch", AGENT, "r2", "--migrate")
    assert switched["migration"]["migrated"] == 130 - 1  # all but the one already on r2
    assert set(await pins_by_release(store, keyspace)) == {"r2"}
    await store.revoke_lease(lease)


class RacingStore:
    """Real etcd; before the first migration transaction a sidecar touches one pin (same lease)
    and another pin's session expires, as can happen between configsvc's read and its write."""

    def __init__(self, store: EtcdStore, touch: str, expire_lease: int) -> None:
        self.store = store
        self.touch = touch
        self.expire_lease = expire_lease
        self.raced = False

    async def get(self, key: str) -> KeyValue | None:
        return await self.store.get(key)

    async def list_prefix(self, prefix: str) -> tuple[int, list[KeyValue]]:
        return await self.store.list_prefix(prefix)

    async def txn(self, puts: Sequence[Put], deletes: Sequence[str] = ()) -> TxnResult:
        if not self.raced and any("/pins/" in p.key for p in puts):
            self.raced = True
            kv = await self.store.get(self.touch)
            assert kv is not None
            touched = Pin.decode(kv.value).touched(2e9)
            await self.store.put(self.touch, touched.encode(), lease=kv.lease)
            await self.store.revoke_lease(self.expire_lease)
        return await self.store.txn(puts, deletes)


async def test_migration_retries_touched_pins_and_skips_expired_ones(
    store: EtcdStore, etcd_env: str
) -> None:
    keyspace = Keyspace(etcd_env)
    lease, short = await store.grant_lease(120), await store.grant_lease(120)
    await write_pins(store, keyspace, lease, "r1", ["a", "b", "c"])
    await write_pins(store, keyspace, short, "r1", ["d"])
    racing = RacingStore(store, keyspace.pin(AGENT, "b"), short)
    ops = PinOps(ConfigService(racing, keyspace))
    result = await ops.migrate(
        Selection(agent=AGENT, source="r1", target="r2"), "token:ops", "race"
    )
    assert racing.raced
    assert (sorted(result.migrated), result.skipped) == (["a", "b", "c"], ["d"])
    now = await pins_by_release(store, keyspace)
    assert set(now) == {"r2"} and len(now["r2"]) == 3
    b = next(Pin.decode(kv.value) for kv in now["r2"] if kv.key.endswith("/b"))
    assert (b.touched_at, b.migrated_from) == (2e9, "r1")  # the sidecar's touch was kept
    assert all(kv.lease == lease for kv in now["r2"])
    await store.revoke_lease(lease)


async def test_an_unknown_agent_is_agent_not_found_for_every_traffic_command(
    stack: Stack,
) -> None:
    """Pins and rollouts answer as canary, switch and shadow do: the agent is unknown (no
    route), never an empty list, a missing pin or a missing release."""
    headers = {"Authorization": f"Bearer {stack.token}"}
    calls: list[tuple[str, str, dict[str, Any] | None]] = [
        ("GET", "pins", None),
        ("GET", "pins/s-1", None),
        ("POST", "pins/migrate", {"from": "r1", "to": "r2"}),
        ("POST", "rollout", {"release": "r2", "steps": "10", "interval": "1h"}),
        ("GET", "rollout", None),
        ("PUT", "canary", {"release": "r2", "percent": 5}),
        ("POST", "switch", {"release": "r2", "probe": False}),
        ("PUT", "shadow", {"release": "r2", "percent": 5}),
        ("GET", "shadow/report", None),
    ]
    async with aiohttp.ClientSession(headers=headers) as http:
        new = {"release": "r1", "model": "m", "base_url": "http://127.0.0.1:9/v1"}
        async with http.post(f"{stack.svc.url}/v1/agents/lonely/releases", json=new) as resp:
            assert resp.status == 201  # releases but no route: no sidecar pinned anything
        for agent in ("nobody", "lonely"):
            for method, path, body in calls:
                url = f"{stack.svc.url}/v1/agents/{agent}/{path}"
                async with http.request(method, url, json=body) as resp:
                    error = (await resp.json())["error"]
                    assert (resp.status, error["code"]) == (404, "agent_not_found"), (path, error)
                    assert f"agent {agent!r} has no route" in error["message"], error
    for args in (("pins", "list", "nobody"), ("pins", "migrate", "nobody", "--from", "r1",
                 "--to", "r2")):  # fmt: skip
        body = await ctl(stack, *args, check=False)
        assert body["error"]["code"] == "agent_not_found", (args, body)
    # a known agent still tells a missing pin from a missing agent
    missing = await ctl(stack, "pins", "show", AGENT, "s-1", check=False)
    assert missing["error"]["code"] == "pin_not_found"
