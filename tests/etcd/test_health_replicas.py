"""Health across configsvc replicas: three replicas share the agents' health (two owners each),
the sidecars beat to the owners, any replica answers ``status`` (asking an owner), and killing
the agent's first owner in the middle of a gated rollout still rolls a bad canary back within
seconds: its second owner holds the same health, takes over the evaluations, and the rollout
controller (wherever it leads) acts on them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from configsvc.console import COOKIE
from holdfast.health_owners import owners
from holdfast_devtools import procs
from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import AGENT, Stack, get_json, start_stack, wait_for
from tests.etcd.test_auto_rollback import Load, control, wait_state

pytestmark = pytest.mark.etcd

FAST = ("--rollout-tick", "0.1", "--leader-ttl", "2", "--console-interval", "0.5")


@pytest.fixture
def stack(tmp_path: Path, etcd_node: EtcdNode, etcd_env: str) -> Iterator[Stack]:
    s = start_stack(tmp_path, etcd_env, [etcd_node.client_url], svc_args=FAST)
    s.create_releases(("r1", "model-one"), ("r2", "model-two"))
    s.set_stable("r1")
    yield s
    s.stop()


async def test_killing_the_first_owner_mid_rollout_still_rolls_a_bad_canary_back(
    stack: Stack, tmp_path: Path, etcd_node: EtcdNode
) -> None:
    others = [
        procs.configsvc(
            tmp_path / f"logs-{n}", [etcd_node.client_url], stack.env, stack.token, *FAST
        ).start()
        for n in (2, 3)
    ]
    replicas = [stack.svc, *others]
    try:
        ids: dict[str, procs.ManagedProcess] = {}
        deadline = time.monotonic() + 20
        while len(ids) < 3:
            assert time.monotonic() < deadline, ids
            ids = {
                e["replica"]: p
                for p in replicas
                for e in p.log_events()
                if e.get("event") == "replica_registered"
            }
            await asyncio.sleep(0.1)
        first, second = owners(AGENT, ids)
        (outsider,) = set(ids) - {first, second}
        sidecars = stack.start_sidecars(
            [etcd_node.client_url], ["sc0", "sc1"], args=("--health-interval", "0.5")
        )
        for side in sidecars:  # beating to both owners, and only to them
            await wait_for(
                f"{side.url}/status",
                lambda b: (
                    b["health"]["owners"] == [first, second]
                    and set(b["health"]["targets"]) == {first, second}
                    and all(t["delivered"] > 0 for t in b["health"]["targets"].values())
                ),
            )
        # the replica that holds nothing of the agent answers status by asking an owner
        _, body = await get_json(f"{ids[outsider].url}/v1/status?agent={AGENT}")
        agent = body["agents"][0]
        assert agent["health_replica"] in (first, second) and agent["sidecars"] == 2
        await outsiders_console_draws_the_owners_view(ids[outsider].url, stack.token, first, second)

        policy = ["--max-error-rate-delta", "0.1", "--min-samples", "20", "--fails-to-abort", "2"]
        stack.svc = ids[outsider]  # the CLI talks to a replica that survives the kill
        stack.ctl("rollout", "start", AGENT, "r2", "--steps", "50,100", "--interval", "1h", *policy)
        load = Load([s.url for s in sidecars], lambda i: "default")
        runner = asyncio.create_task(load.run())
        try:
            await asyncio.sleep(3)  # the canary takes traffic and is healthy
            ids[first].kill()  # SIGKILL: its membership lapses with its lease
            await control(stack, "model-two", {"error_rate": 1.0})
            bad_at = time.monotonic()
            aborted = await wait_state(stack, "aborted", timeout=30)
            took = time.monotonic() - bad_at
        finally:
            load.running = False
            await runner
        print(f"\nfirst owner killed, canary bad -> aborted in {took:.2f}s")
        assert took < 10
        reason = aborted["rollout"]["reason"]
        assert reason.startswith("health gate: 2 failing evaluations"), reason

        # the survivors own the agent's health between them now (the outsider's first beats
        # arrive once the sidecars see the first owner gone), and either answers for it
        def failing(body: dict[str, Any]) -> bool:
            agent = body["agents"][0]
            r2 = agent["releases"].get("r2", {}).get("windows", {}).get("1m", {})
            return (
                agent["health_replica"] in (second, outsider) and (r2.get("error_rate") or 0) > 0.1
            )

        for name in (outsider, second):
            await wait_for(f"{ids[name].url}/v1/status?agent={AGENT}", failing, timeout=10)
        history = json.loads(stack.ctl("--json", "history", "--agent", AGENT).stdout)
        abort = next(e for e in history["entries"] if e["action"] == "rollout.abort")
        assert abort["actor"] == "rollout-controller"
    finally:
        for proc in others:
            proc.stop()


async def outsiders_console_draws_the_owners_view(
    url: str, token: str, first: str, second: str
) -> None:
    """The console and /metrics of a replica that holds nothing of the agent: its sidecars as
    the owners see them (beating now, not the presence snapshots etcd holds), never 'quiet'."""
    async with aiohttp.ClientSession() as http:
        form = {"token": token, "next": f"/ui/agents/{AGENT}"}
        async with http.post(f"{url}/ui/login", data=form, headers={"Origin": url},
                             allow_redirects=False) as resp:  # fmt: skip
            assert resp.status == 303, await resp.text()
            session = {"Cookie": f"{COOKIE}={resp.cookies[COOKIE].value}"}
        deadline = time.monotonic() + 10
        while True:
            async with http.get(f"{url}/ui/agents/{AGENT}", headers=session) as resp:
                page = await resp.text()
            held = [r for r in (first, second) if f"Health held by replica {r}." in page]
            if held and "<strong>2</strong> live" in page:
                break
            assert time.monotonic() < deadline, page
            await asyncio.sleep(0.2)
        assert "quiet</span>" not in page and "answered" not in page
        async with http.get(f"{url}/metrics") as resp:
            metrics = await resp.text()
    assert f'holdfast_fleet_sidecars{{agent="{AGENT}"}} 2.0' in metrics
    assert f'holdfast_fleet_sidecars_quiet{{agent="{AGENT}"}}' not in metrics  # an owner's say
    assert "holdfast_configsvc_replicas 3.0" in metrics
