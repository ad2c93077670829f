"""One rollout at a time, asked at the same instant of two configsvc replicas over one etcd."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from holdfast_devtools import procs
from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import AGENT, Stack

pytestmark = pytest.mark.etcd

ROUNDS = 5


async def start_rollout(
    http: aiohttp.ClientSession, url: str, release: str, go: asyncio.Event
) -> tuple[int, Any]:
    body = {"release": release, "steps": "10,50", "interval": "1h", "reason": f"race {release}"}
    await go.wait()
    async with http.post(f"{url}/v1/agents/{AGENT}/rollout", json=body) as resp:
        return resp.status, await resp.json()


async def test_two_simultaneous_rollout_starts_on_two_replicas_one_wins(
    stack: Stack, tmp_path: Path, etcd_node: EtcdNode, etcd_env: str
) -> None:
    second = procs.configsvc(tmp_path / "logs-b", [etcd_node.client_url], etcd_env, stack.token)
    second.start()
    headers = {"Authorization": f"Bearer {stack.token}", "X-Holdfast-Actor": "race"}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            for round_ in range(ROUNDS):
                go = asyncio.Event()
                racing = asyncio.gather(
                    start_rollout(http, stack.svc.url, "r2", go),
                    start_rollout(http, second.url, "r3", go),
                )
                await asyncio.sleep(0.05)  # both requests wait on the same event
                go.set()
                (status_a, body_a), (status_b, body_b) = await racing
                assert sorted([status_a, status_b]) == [201, 409], (body_a, body_b)
                winner, loser = ("r2", body_b) if status_a == 201 else ("r3", body_a)
                assert loser["error"]["code"] == "rollout_active", loser
                assert f"already has a rollout of {winner!r}" in loser["error"]["message"]
                async with http.get(f"{stack.svc.url}/v1/agents/{AGENT}/route") as resp:
                    route = (await resp.json())["route"]
                assert route["rollout"]["release"] == route["canary"] == winner, round_
                assert route["canary_percent"] == 10.0
                async with http.post(
                    f"{second.url}/v1/agents/{AGENT}/rollout/abort", json={}
                ) as resp:
                    assert resp.status == 200
    finally:
        second.stop()
    history = json.loads(stack.ctl("--json", "history", "--agent", AGENT, "--limit", "100").stdout)
    starts = [e for e in history["entries"] if e["action"] == "rollout.start"]
    assert len(starts) == ROUNDS  # the loser of each round wrote nothing
