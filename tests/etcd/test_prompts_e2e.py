"""End to end: prompt versions with the evaluation gate, rollback, experiments -- real etcd,
real configsvc, real holdfastctl, the fake LLM (and a real sidecar for feedback)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp

from holdfast.devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import AGENT, Stack, get_json, start_stack, wait_for

Json = dict[str, Any]


def _files(base: Path) -> dict[str, Path]:
    files = {
        "v1": "You answer for {{shop}}.",
        "v2": "You answer for {{shop}}, briefly.",
        "good": json.dumps(
            {
                "cases": [
                    {
                        "id": f"c{i}",
                        "input": f"question {i}",
                        "vars": {"shop": "Acme"},
                        "expect": {"contains": "[model-one]", "regex": "^\\[model"},
                    }
                    for i in range(3)
                ]
            }
        ),
        "bad": json.dumps(
            {
                "cases": [
                    {
                        "id": "refund",
                        "input": "refunds?",
                        "vars": {"shop": "Acme"},
                        "expect": {"contains": ["30 days"]},
                    },
                    {
                        "id": "shape",
                        "input": "json please",
                        "vars": {"shop": "Acme"},
                        "expect": {"json_schema": {"type": "object"}},
                    },
                ]
            }
        ),
        "broken": '{"cases": [',
        "unknown-var": json.dumps(
            {
                "cases": [
                    {"input": "x", "vars": {"shop": "A", "tone": "x"}, "expect": {"contains": "x"}}
                ]
            }
        ),
    }
    out = {}
    for name, text in files.items():
        path = base / f"{name}.txt"
        path.write_text(text)
        out[name] = path
    return out


def ctl_json(stack: Stack, *args: str, check: bool = True) -> tuple[int, Json]:
    result = stack.ctl("--json", *args, check=check)
    return result.returncode, json.loads(result.stdout) if result.stdout.strip() else {}


def test_gate_activation_rollback_and_release_prompts(stack: Stack, tmp_path: Path) -> None:
    f = _files(tmp_path)
    _, created = ctl_json(stack, "prompt", "create", "support", "--file", str(f["v1"]))
    assert created["prompt"]["version"] == 1 and created["prompt"]["status"] == "draft"
    ctl_json(stack, "prompt", "create", "support", "--file", str(f["v2"]))

    # never evaluated: the gate refuses
    refused = stack.ctl("prompt", "activate", "support@1", check=False)
    assert refused.returncode == 1 and "has not been evaluated" in refused.stderr

    _, ev = ctl_json(
        stack, "prompt", "eval", "support@1", "--cases", str(f["good"]), "--release", f"{AGENT}/r1"
    )
    assert ev["evaluation"]["passed"] == 3 and ev["passes_gate"]
    human = stack.ctl("prompt", "activate", "support@1").stdout
    assert "activated support@1" in human

    # v2 against the fake: its answers never say "30 days" nor are JSON -> 0 %
    _, ev = ctl_json(
        stack,
        "prompt",
        "eval",
        "support@2",
        "--cases",
        str(f["bad"]),
        "--release",
        "r1",
        "--agent",
        AGENT,
    )
    assert ev["evaluation"]["pass_rate"] == 0 and not ev["passes_gate"]
    checks = ev["evaluation"]["cases"][1]["checks"]
    assert checks[0]["kind"] == "json_schema" and not checks[0]["passed"]
    blocked = stack.ctl("prompt", "activate", "support@2", check=False)
    assert blocked.returncode == 1 and "below the gate of 80%" in blocked.stderr
    no_reason = stack.ctl("prompt", "activate", "support@2", "--force", check=False)
    assert no_reason.returncode == 1 and "needs a --reason" in no_reason.stderr
    _, versions = ctl_json(stack, "prompt", "list", "support")
    assert [v["status"] for v in versions["versions"]] == ["active", "draft"]

    _, forced = ctl_json(
        stack, "prompt", "activate", "support@2", "--force", "--reason", "legal asked for it"
    )
    assert forced == {**forced, "active": 2, "deactivated": 1, "forced": True}
    _, versions = ctl_json(stack, "prompt", "list", "support")
    assert [v["status"] for v in versions["versions"]] == ["deprecated", "active"]
    _, history = ctl_json(stack, "history", "--limit", "3")
    entry = history["entries"][0] if "entries" in history else history["items"][0]
    assert entry["action"] == "prompt.activate" and entry["reason"] == "legal asked for it"

    _, back = ctl_json(stack, "prompt", "rollback", "support")
    assert (back["active"], back["deactivated"]) == (1, 2)
    _, versions = ctl_json(stack, "prompt", "list", "support")
    assert [v["status"] for v in versions["versions"]] == ["active", "deprecated"]
    again = stack.ctl("prompt", "rollback", "support", check=False)
    assert again.returncode == 1 and "nothing to roll back to" in again.stderr

    diff = stack.ctl("prompt", "diff", "support", "1", "2").stdout
    assert "-You answer for {{shop}}." in diff and "+You answer for {{shop}}, briefly." in diff

    # bad case files: not JSON (the CLI says so), a variable the prompt does not take (400)
    broken = stack.ctl(
        "prompt",
        "eval",
        "support@1",
        "--cases",
        str(f["broken"]),
        "--release",
        f"{AGENT}/r1",
        check=False,
    )
    assert broken.returncode == 2 and "is not JSON" in broken.stderr
    unknown = stack.ctl(
        "prompt",
        "eval",
        "support@1",
        "--cases",
        str(f["unknown-var"]),
        "--release",
        f"{AGENT}/r1",
        check=False,
    )
    assert unknown.returncode == 1 and "unknown variable(s): tone" in unknown.stderr

    # a model failing during eval: every case errors -> nothing recorded
    stack_fake_errors(stack, "model-two")
    failing = stack.ctl(
        "prompt",
        "eval",
        "support@2",
        "--cases",
        str(f["good"]),
        "--release",
        f"{AGENT}/r2",
        check=False,
    )
    assert failing.returncode == 1 and "failed every case" in failing.stderr
    _, shown = ctl_json(stack, "prompt", "show", "support@2")
    assert shown["prompt"]["evaluation"]["release"] == "r1"  # the earlier run is kept

    # releases name prompt versions: NAME takes the active one, NAME=active follows
    _, rel = ctl_json(
        stack,
        "release",
        "create",
        AGENT,
        "p1",
        "--model",
        "model-one",
        "--base-url",
        f"{stack.fake.url}/v1",
        "--prompt",
        "support",
        "--prompt",
        "support=active",
    )
    assert rel["release"]["prompts"] == {"support": "active"}
    _, rel = ctl_json(
        stack,
        "release",
        "create",
        AGENT,
        "p2",
        "--model",
        "model-one",
        "--base-url",
        f"{stack.fake.url}/v1",
        "--prompt",
        "support",
    )
    assert rel["release"]["prompts"] == {"support": "1"}
    missing = stack.ctl(
        "release",
        "create",
        AGENT,
        "p3",
        "--model",
        "model-one",
        "--base-url",
        f"{stack.fake.url}/v1",
        "--prompt",
        "support=9",
        check=False,
    )
    assert missing.returncode == 1 and "has no version 9" in missing.stderr


def stack_fake_errors(stack: Stack, model: str) -> None:
    import urllib.request

    req = urllib.request.Request(
        f"{stack.fake.url}/_control/models/{model}",
        data=json.dumps({"error_rate": 1.0}).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=5).read()


async def test_experiment_feedback_report_and_winner(
    stack: Stack, etcd_node: EtcdNode, tmp_path: Path
) -> None:
    sidecar = stack.start_sidecar([etcd_node.client_url], args=("--health-interval", "0.2"))
    _, started = ctl_json(
        stack,
        "experiment",
        "start",
        "tone",
        "--agent",
        AGENT,
        "--variants",
        "a=r1,b=r2",
        "--split",
        "50,50",
        "--metric",
        "resolved",
        "--metric-type",
        "rate",
    )
    assert started["experiment"]["state"] == "running"
    conflict = stack.ctl("canary", "set", AGENT, "r3", "--percent", "10", check=False)
    assert conflict.returncode == 1 and "runs experiment 'tone'" in conflict.stderr
    second = stack.ctl(
        "experiment",
        "start",
        "other",
        "--agent",
        AGENT,
        "--variants",
        "a=r1,b=r3",
        "--metric",
        "m",
        check=False,
    )
    assert second.returncode == 1 and "already runs experiment" in second.stderr
    await wait_for(f"{sidecar.url}/status", lambda b: "tone" in json.dumps(b.get("route")))

    served: dict[str, str] = {}
    async with aiohttp.ClientSession() as http:
        for i in range(40):
            body = {"model": AGENT, "messages": [{"role": "user", "content": "hi"}]}
            headers = {"X-Holdfast-Session": f"s{i}"}
            async with http.post(
                f"{sidecar.url}/v1/chat/completions", json=body, headers=headers
            ) as resp:
                assert resp.status == 200
                served[f"s{i}"] = resp.headers["X-Holdfast-Release"]
        for session, release in served.items():
            value = 1 if release == "r2" or session.endswith(("0", "5")) else 0
            payload = {"session": session, "metric": "resolved", "value": value}
            async with http.post(f"{sidecar.url}/v1/holdfast/feedback", json=payload) as resp:
                assert resp.status == 202
    assert set(served.values()) == {"r1", "r2"}

    def counted(body: Json) -> bool:
        return bool(sum(v["n"] for v in body["variants"]) == 40)

    report = await wait_for(f"{stack.svc.url}/v1/experiments/tone/report", counted)
    by = {v["variant"]: v for v in report["variants"]}
    assert by["a"]["n"] + by["b"]["n"] == 40 and by["b"]["mean"] == 1.0
    assert report["state"] == "not_enough_data"  # 20 per arm is below the default 30
    human = stack.ctl("experiment", "report", "tone").stdout
    assert "not enough data" in human
    # outcomes outlive the sidecar that gathered them: kill it, let its health lease (2 s) lapse
    sidecar.kill()
    await asyncio.sleep(3.0)
    kept = await wait_for(f"{stack.svc.url}/v1/experiments/tone/report", counted, timeout=1.0)
    assert kept["sidecars_reporting"] == 1

    _, stopped = ctl_json(
        stack, "experiment", "stop", "tone", "--winner", "b", "--reason", "b resolves more"
    )
    assert stopped["route"]["stable"] == "r2" and stopped["route"]["experiment"] is None
    status, _ = await get_json(f"{stack.svc.url}/v1/experiments/tone")
    assert status == 200
    stack.ctl("canary", "set", AGENT, "r3", "--percent", "10")  # the route is free again


def test_etcd_down_activates_nothing(tmp_path: Path, fresh_etcd: EtcdNode, etcd_env: str) -> None:
    stack = start_stack(tmp_path, etcd_env, [fresh_etcd.client_url])
    try:
        f = _files(tmp_path)
        stack.ctl("prompt", "create", "support", "--file", str(f["v1"]))
        stack.ctl("prompt", "create", "support", "--file", str(f["v2"]))
        stack.ctl("prompt", "activate", "support@1", "--force", "--reason", "bootstrap")
        fresh_etcd.stop()
        down = stack.ctl("prompt", "activate", "support@2", "--force", "--reason", "x", check=False)
        assert down.returncode == 1 and "etcd" in down.stderr
        rolled = stack.ctl("prompt", "rollback", "support", check=False)
        assert rolled.returncode == 1 and "etcd" in rolled.stderr
        fresh_etcd.restart()
        _, versions = ctl_json(stack, "prompt", "list", "support")
        assert [v["status"] for v in versions["versions"]] == ["active", "draft"]
    finally:
        stack.stop()
