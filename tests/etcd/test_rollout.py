"""Progressive rollouts through two real configsvc replicas, the real CLI and real etcd."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from holdfast_devtools import procs
from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import AGENT, Stack, start_stack

pytestmark = pytest.mark.etcd

FAST = ("--rollout-tick", "0.1", "--leader-ttl", "2")


@pytest.fixture
def stack(tmp_path: Path, etcd_node: EtcdNode, etcd_env: str) -> Iterator[Stack]:
    s = start_stack(tmp_path, etcd_env, [etcd_node.client_url], svc_args=FAST)
    s.create_releases(("r1", "model-one"), ("r2", "model-two"), ("r3", "model-three"))
    s.set_stable("r1")
    yield s
    s.stop()


def ctl_json(stack: Stack, *args: str, check: bool = True) -> Any:
    result = stack.ctl("--json", *args, check=check)
    return json.loads(result.stdout) if result.stdout.strip() else None


def wait_until(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def history_actions(stack: Stack, action: str) -> list[dict[str, Any]]:
    body = ctl_json(stack, "history", "--agent", AGENT, "--limit", "200")
    return [e for e in body["entries"] if e["action"] == action]


def test_rollout_walks_its_steps_once_across_leader_failover(
    stack: Stack, tmp_path: Path, etcd_node: EtcdNode, etcd_env: str
) -> None:
    second = procs.configsvc(
        tmp_path / "logs-b", [etcd_node.client_url], etcd_env, stack.token, *FAST
    ).start()
    try:
        out = stack.ctl("rollout", "start", AGENT, "r2", "--steps", "10,50,100", "--interval", "2s")
        assert "rollout support: start → running" in out.stdout
        # one rollout at a time, whichever replica is asked
        other = Stack(stack.base, stack.env, stack.fake, second, token=stack.token)
        refused = other.ctl(
            "rollout", "start", AGENT, "r3", "--steps", "50", "--interval", "1s", check=False
        )
        assert refused.returncode == 1 and "already has a rollout" in refused.stderr
        status = ctl_json(stack, "rollout", "status", AGENT)
        assert status["rollout"]["state"] == "running"
        # the first step as it was written (the controller may already have taken the next one
        # on a slow machine: the steps are 2 s apart)
        [started] = history_actions(stack, "rollout.start")
        assert started["after"]["canary_percent"] == 10.0
        leader = wait_until(
            lambda: ctl_json(stack, "rollout", "status", AGENT)["controller"]["leader"]
        )
        # kill the leading replica outright: the other one takes over and finishes the plan
        leading = stack.svc if f"-{stack.svc.proc.pid}-" in leader else second  # type: ignore[union-attr]
        survivor = second if leading is stack.svc else stack.svc
        leading.kill()
        stack.svc = survivor
        final = wait_until(
            lambda: (b := ctl_json(stack, "route", "show", AGENT))["route"]["stable"] == "r2" and b,
            timeout=30,
        )
        route = final["route"]
        assert route["canary"] is None and route["canary_percent"] == 0.0
        assert route["rollout"]["state"] == "done" and route["previous_stable"] == "r1"
        advances = history_actions(stack, "rollout.advance")
        # 10 -> 50, 50 -> 100, 100 -> promoted: exactly three, never a double step
        assert [a["after"]["canary_percent"] for a in reversed(advances)] == [50.0, 100.0, 0.0]
        assert all(a["actor"] == "rollout-controller" for a in advances)
    finally:
        second.stop()


def test_pause_resume_promote_abort_and_refusals(stack: Stack) -> None:
    stack.ctl("rollout", "start", AGENT, "r2", "--steps", "5,50", "--interval", "1h")
    paused = ctl_json(stack, "rollout", "pause", AGENT, "--reason", "weekend")
    assert paused["route"]["rollout"]["state"] == "paused" and paused["changed"]
    again = stack.ctl("rollout", "pause", AGENT)
    assert "already paused" in again.stdout
    status = stack.ctl("rollout", "status", AGENT).stdout
    assert "state:" in status and "paused" in status and "[5%] → 50%" in status
    # the canary belongs to the rollout while it is active
    blocked = stack.ctl(
        "rollout", "start", AGENT, "r3", "--steps", "1", "--interval", "1s", check=False
    )
    assert blocked.returncode == 1
    resumed = ctl_json(stack, "rollout", "resume", AGENT)
    assert resumed["route"]["rollout"]["state"] == "running"
    aborted = ctl_json(stack, "rollout", "abort", AGENT, "--reason", "errors up", "--migrate")
    assert aborted["migration"]["from"] == "r2" and aborted["migration"]["to"] == "r1"
    route = aborted["route"]
    assert route["canary_percent"] == 0.0 and route["stable"] == "r1"
    assert route["rollout"]["state"] == "aborted" and route["rollout"]["reason"] == "errors up"
    gone = stack.ctl("rollout", "abort", AGENT, check=False)
    assert gone.returncode == 1 and "no rollout running" in gone.stderr
    # a new rollout may follow an aborted one, and promote ends it at once
    stack.ctl("rollout", "start", AGENT, "r3", "--steps", "1,2", "--interval", "1h")
    promoted = ctl_json(stack, "rollout", "promote", AGENT)
    assert promoted["route"]["stable"] == "r3" and promoted["route"]["previous_stable"] == "r1"
    for args, needle in (
        (("r9", "--steps", "5", "--interval", "1m"), "no release"),
        (("r2", "--steps", "5,2", "--interval", "1m"), "increase"),
        (("r2", "--steps", "150", "--interval", "1m"), "outside"),
        (("r2", "--steps", "5", "--interval", "soon"), "interval"),
        (("r2", "--steps", "5", "--interval", "100ms"), "between"),
        (("r3", "--steps", "5", "--interval", "1m"), "already the stable"),
    ):
        bad = stack.ctl("rollout", "start", AGENT, *args, check=False)
        assert bad.returncode == 1 and needle in bad.stderr, (args, bad.stderr)
    assert len(history_actions(stack, "rollout.start")) == 2
    assert len(history_actions(stack, "rollout.abort")) == 1


def test_rollout_commands_when_etcd_is_down(tmp_path: Path, fresh_etcd: EtcdNode) -> None:
    stack = start_stack(tmp_path, "dev", [fresh_etcd.client_url])
    try:
        stack.create_releases(("r1", "model-one"), ("r2", "model-two"))
        stack.set_stable("r1")
        fresh_etcd.stop()
        down = stack.ctl(
            "rollout", "start", AGENT, "r2", "--steps", "5", "--interval", "1m", check=False
        )
        assert down.returncode == 1 and "etcd is unavailable" in down.stderr
        status = stack.ctl("rollout", "status", AGENT, check=False)
        assert status.returncode == 1 and "etcd is unavailable" in status.stderr
        fresh_etcd.start()
        fresh_etcd.wait_ready()
        body = ctl_json(stack, "rollout", "status", AGENT)
        assert body["rollout"] == {"state": "none"}  # nothing was half-written
    finally:
        stack.stop()
