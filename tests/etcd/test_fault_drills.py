"""Fault drills through the real processes: a 3-member etcd cluster loses its leader (SIGKILL)
while a second process drives steady load through a sidecar and an operator keeps changing the
route. No request may fail, p99 must stay within 2x of the baseline, and every sidecar must
apply every change exactly once, in revision order (checked over the revisions it applied)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from holdfast.devtools.etcd_local import EtcdCluster, EtcdNode
from holdfast.keyspace import Keyspace
from holdfast.store.etcd import EtcdStore
from tests.etcd.spine_stack import AGENT, Stack, get_json, start_stack

pytestmark = pytest.mark.etcd

BASELINE_S = 4.0
FAULT_S = 6.0
# p99 "within 2x of baseline": 2x, plus a small absolute allowance for a 2-core CI machine
# where a few milliseconds of scheduling noise would otherwise decide the verdict.
P99_SLACK_S = 0.010


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def applied_revisions(log: Path) -> list[int]:
    events = (json.loads(line) for line in log.read_text().splitlines() if line.startswith("{"))
    return [e["revision"] for e in events if e.get("event") == "config_applied"]


async def test_etcd_leader_killed_under_load_and_changes(
    tmp_path: Path, etcd_cluster: EtcdCluster, etcd_env: str
) -> None:
    endpoints = etcd_cluster.endpoints
    stack: Stack = start_stack(tmp_path, etcd_env, endpoints)
    try:
        stack.create_releases(("r1", "model-one"), ("r2", "model-two"))
        stack.ctl("route", "set-stable", AGENT, "r1")
        sides = [stack.start_sidecar(endpoints, name=f"side-{i}") for i in range(2)]
        out = tmp_path / "load.json"
        argv = [sys.executable, "-m", "tests.etcd.load_driver", sides[0].url]
        load = await asyncio.to_thread(
            subprocess.Popen, [*argv, str(BASELINE_S + FAULT_S), str(out)]
        )
        t0 = time.time()
        await asyncio.sleep(BASELINE_S)
        killed_at = time.time()
        await asyncio.to_thread(etcd_cluster.kill_leader)
        changes: list[int] = []
        for percent in range(5, 55, 5):  # the operator keeps working through the election
            body = json.loads(stack.ctl("--json", "canary", "set", AGENT, "r2", "--percent",
                                        str(percent)).stdout)  # fmt: skip
            changes.append(body["mod_revision"])
            await asyncio.sleep(0.2)
        assert await asyncio.to_thread(load.wait, 60) == 0
        records: list[list[Any]] = json.loads(out.read_text())
        failed = [r for r in records if r[2] != 200]
        assert failed == [], failed[:5]
        base = [r[1] for r in records if t0 + 0.5 <= r[0] < killed_at]
        fault = [r[1] for r in records if r[0] >= killed_at]
        assert len(base) > 50 and len(fault) > 50
        assert p99(fault) <= 2 * p99(base) + P99_SLACK_S, (p99(base), p99(fault))
        for side in sides:  # every change arrives, exactly once, in order
            deadline = time.monotonic() + 20
            while (await get_json(f"{side.url}/status"))[1]["config"]["revision"] < changes[-1]:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            applied = applied_revisions(side.log_path)
            assert applied == sorted(set(applied)), applied
            assert set(changes) <= set(applied), (changes, applied)
            _, status = await get_json(f"{side.url}/status")
            assert status["route"]["canary_percent"] == 50.0
    finally:
        stack.stop()


async def test_all_of_etcd_down_then_back_loses_nothing(
    tmp_path: Path, fresh_etcd: EtcdNode, etcd_env: str
) -> None:
    """etcd gone for OUTAGE_S (the issue's drill is a minute: HOLDFAST_DRILL_OUTAGE_S=60) under
    steady load: requests keep succeeding on the last-known config, readiness stays up while
    /status says stale, new sessions are pinned locally; afterwards their pins and the
    sidecar's health key are in etcd and a change made after the outage is applied."""
    outage = float(os.environ.get("HOLDFAST_DRILL_OUTAGE_S", "8"))
    stack = start_stack(tmp_path, etcd_env, [fresh_etcd.client_url])
    keyspace = Keyspace(etcd_env)
    try:
        stack.create_releases(("r1", "model-one"), ("r2", "model-two"))
        stack.ctl("route", "set-stable", AGENT, "r1")
        side = stack.start_sidecar(
            [fresh_etcd.client_url], args=("--health-interval", "0.5", "--stale-after", "1")
        )
        out = tmp_path / "load.json"
        argv = [sys.executable, "-m", "tests.etcd.load_driver", side.url, str(outage + 4), str(out)]
        load = await asyncio.to_thread(subprocess.Popen, argv)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(fresh_etcd.stop)
        await asyncio.sleep(min(2.0, outage))
        status, ready = await get_json(f"{side.url}/readyz")
        assert status == 200 and ready["stale"] is True
        sessions = [f"outage-{i}" for i in range(20)]
        async with aiohttp.ClientSession() as http:
            for sid in sessions:
                body = {"model": AGENT, "messages": [{"role": "user", "content": "hi"}]}
                headers = {"X-Holdfast-Session": sid}
                async with http.post(
                    f"{side.url}/v1/chat/completions", json=body, headers=headers
                ) as resp:
                    assert resp.status == 200 and resp.headers["X-Holdfast-Release"] == "r1"
        await asyncio.sleep(max(0.0, outage - 2.0))
        await asyncio.to_thread(lambda: fresh_etcd.start().wait_ready())
        assert await asyncio.to_thread(load.wait, 60) == 0
        records: list[list[Any]] = json.loads(out.read_text())
        assert len(records) > 100 and [r for r in records if r[2] != 200] == []
        store = EtcdStore([fresh_etcd.client_url])
        await store.connect()
        try:
            deadline = time.monotonic() + 20
            while True:  # the queued pins and the health key arrive once etcd is back
                _, pins = await store.list_prefix(keyspace.pins_of(AGENT))
                _, health = await store.list_prefix(keyspace.kind_prefix("health"))
                if {kv.key for kv in pins} >= {keyspace.pin(AGENT, s) for s in sessions} and health:
                    break
                assert time.monotonic() < deadline, (len(pins), len(health))
                await asyncio.sleep(0.2)
        finally:
            await store.close()
        stack.ctl("route", "set-stable", AGENT, "r2")
        deadline = time.monotonic() + 20
        while True:
            _, body = await get_json(f"{side.url}/status")
            if body["route"]["stable"] == "r2" and not body["config"]["stale"]:
                break
            assert time.monotonic() < deadline, body["config"]
            await asyncio.sleep(0.1)
    finally:
        stack.stop()
