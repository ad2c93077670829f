"""Canary, blue-green switch and shadow through the real CLI, a real ``holdfastctl serve``, the
real fake LLM and a real etcd; health snapshots are written into etcd as sidecars would."""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from configsvc.http.auth import Authorizer
from configsvc.releases.ops import ConfigService
from configsvc.releases.probe import Prober
from configsvc.server.app import build_app
from configsvc.server.run import start_site
from configsvc.server.settings import ENV_PROBE_PROMPT
from configsvc.traffic.api import TrafficApi
from configsvc.traffic.ops import TrafficOps
from configsvc.traffic.pins import PinOps
from holdfast.keyspace import HealthSnapshot, Keyspace, ShadowStats
from holdfast.store.etcd import EtcdStore
from holdfast_devtools import procs
from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import AGENT, KEY_VAR, Stack

pytestmark = pytest.mark.etcd

TOKEN = "traffic-test-token-0123"


def js(stack: Stack, *args: str) -> Any:
    return json.loads(stack.ctl("--json", *args).stdout)


def refused(stack: Stack, *args: str, code: str) -> str:
    """Exit 1, the error body (``--json``) has ``code``; returns the message."""
    result = stack.ctl("--json", *args, check=False)
    assert result.returncode == 1, (result.stdout, result.stderr)
    error = json.loads(result.stdout)["error"]
    assert error["code"] == code, error
    return str(error["message"])


def route(stack: Stack) -> dict[str, Any]:
    return js(stack, "route", "show", AGENT)  # type: ignore[no-any-return]


def history(stack: Stack, action: str) -> list[dict[str, Any]]:
    entries = js(stack, "history", "--agent", AGENT, "--limit", "200")["entries"]
    return [e for e in entries if e["action"] == action]


def fake_control(stack: Stack, model: str, behaviour: dict[str, Any]) -> None:
    request = urllib.request.Request(
        f"{stack.fake.url}/_control/models/{model}",
        data=json.dumps(behaviour).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert resp.status == 200


def fake_requests(stack: Stack) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{stack.fake.url}/_control/requests?limit=50", timeout=5) as r:
        body: Any = json.loads(r.read())
    return body["requests"] if isinstance(body, dict) else body  # type: ignore[no-any-return]


def test_canary_set_clear_and_refusals(stack: Stack) -> None:
    out = stack.ctl("canary", "set", AGENT, "r2", "--percent", "20", "--reason", "try r2").stdout
    assert out.startswith(f"canary {AGENT}: r2 takes 20% of new sessions, the rest go to r1")
    shown = route(stack)
    assert (shown["route"]["canary"], shown["route"]["canary_percent"]) == ("r2", 20.0)
    seen = shown["mod_revision"]

    assert "no release 'r9'" in refused(
        stack, "canary", "set", AGENT, "r9", "--percent", "5", code="release_not_found"
    )
    refused(stack, "canary", "set", "nobody", "r2", "--percent", "5", code="agent_not_found")
    assert "between 0 and 100" in refused(
        stack, "canary", "set", AGENT, "r2", "--percent", "150", code="invalid_request"
    )
    refused(stack, "canary", "set", AGENT, "r2", "--percent", "-1", code="invalid_request")
    assert "stable release already" in refused(
        stack, "canary", "set", AGENT, "r1", "--percent", "5", code="invalid_request"
    )
    usage = stack.ctl("canary", "set", AGENT, "r2", "--percent", "lots", check=False)
    assert usage.returncode == 2 and "not a number" in usage.stderr

    # a rollout owns the split: canary commands are refused until it ends
    stack.ctl("canary", "clear", AGENT)
    stack.ctl("rollout", "start", AGENT, "r3", "--steps", "10,50", "--interval", "1h")
    during = route(stack)["mod_revision"]
    for args in (("set", AGENT, "r2", "--percent", "30"), ("clear", AGENT)):
        message = refused(stack, "canary", *args, code="rollout_active")
        assert "abort or finish it first" in message
    assert route(stack)["mod_revision"] == during
    stack.ctl("rollout", "abort", AGENT)
    body = js(stack, "canary", "set", AGENT, "r2", "--percent", "0")
    assert (body["route"]["canary"], body["route"]["canary_percent"]) == ("r2", 0.0)
    out = stack.ctl("canary", "clear", AGENT, "--reason", "done").stdout
    assert out.startswith(f"canary {AGENT}: cleared; all new sessions go to r1")
    sets, clears = history(stack, "canary.set"), history(stack, "canary.clear")
    assert [e["after"]["canary_percent"] for e in sets] == [0.0, 20.0]
    assert sets[-1]["reason"] == "try r2" and sets[-1]["before"]["canary"] is None
    assert clears[0]["reason"] == "done" and len(clears) == 2
    assert sets[-1]["revision"] == seen


async def test_api_refuses_bad_bodies_and_oversized_ones(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.token}"}
    url = f"{stack.svc.url}/v1/agents/{AGENT}"
    before = route(stack)["mod_revision"]
    cases: list[tuple[str, str, Any, str | None]] = [
        ("PUT", "canary", {"release": "r2", "percent": "10"}, "percent"),
        ("PUT", "canary", {"release": "r2", "percent": 10, "percnt": 1}, "percnt"),
        ("PUT", "canary", {"release": "r2"}, "percent"),
        ("PUT", "shadow", {"release": "r2", "percent": 5, "min_similarity": 2}, "min_similarity"),
        ("PUT", "shadow", {"release": "r2", "percent": 5, "min_samples": 1.5}, "min_samples"),
        ("POST", "switch", {"release": "r2", "back": True}, "release"),
        ("POST", "switch", {"release": "r2", "probe": "no"}, "probe"),
        ("POST", "pins/migrate", {"from": "r1", "to": "r1"}, "to"),
        ("POST", "pins/migrate", {"from": "r1", "to": "r2", "percent": 0}, "percent"),
        ("POST", "pins/migrate", {"from": "r1", "to": "r2", "session": "a/b"}, "session"),
    ]
    async with aiohttp.ClientSession(headers=headers) as http:
        for method, path, body, param in cases:
            async with http.request(method, f"{url}/{path}", json=body) as resp:
                error = (await resp.json())["error"]
                assert (resp.status, error["param"]) == (400, param), (path, body, error)
        async with http.put(f"{url}/canary", data=b"{" + b" " * 70_000 + b"}") as resp:
            assert (resp.status, (await resp.json())["error"]["code"]) == (413, "request_too_large")
        async with http.get(f"{url}/shadow/report?min_samples=ten") as resp:
            assert resp.status == 400
        async with http.put(f"{url}/canary", json={"release": "r2", "percent": 5}) as resp:
            assert resp.status == 200  # the same session works: nothing above was a fluke
        async with aiohttp.ClientSession() as anonymous:
            async with anonymous.delete(f"{url}/canary") as resp:
                assert resp.status == 401
    assert route(stack)["mod_revision"] > before


def test_switch_probes_the_target_and_goes_back(stack: Stack) -> None:
    fake_control(stack, "model-two", {"error_rate": 1.0, "error_status": 503})
    before = route(stack)["mod_revision"]
    message = refused(stack, "switch", AGENT, "r2", code="probe_failed")
    assert "probe of release 'r2' (model model-two) failed: provider answered HTTP 503" in message
    assert "nothing was switched" in message
    assert route(stack)["mod_revision"] == before

    fake_control(stack, "model-two", {"error_rate": 0.0})
    stack.ctl("canary", "set", AGENT, "r3", "--percent", "10")
    out = stack.ctl("switch", AGENT, "r2", "--reason", "blue-green").stdout
    assert out.startswith(f"switch {AGENT}: stable r1 → r2 (revision ")
    assert "probe ok in" in out
    probe = [r for r in fake_requests(stack) if r["body"].get("model") == "model-two"][-1]
    assert probe["body"]["max_tokens"] == 8 and probe["body"]["stream"] is False
    assert probe["headers"]["authorization"] == f"Bearer {stack.provider_key}"
    r = route(stack)["route"]
    assert (r["stable"], r["previous_stable"], r["canary"], r["canary_percent"]) == (
        "r2", "r1", None, 0.0,
    )  # fmt: skip

    assert "already" in refused(stack, "switch", AGENT, "r2", code="invalid_request")
    refused(stack, "switch", AGENT, "r9", code="release_not_found")
    body = js(stack, "switch", AGENT, "--back")  # no probe on the way back, even if it is down
    assert (body["route"]["stable"], body["probe"]["status"]) == ("r1", "not_needed")
    fake_control(stack, "model-three", {"error_rate": 1.0})
    body = js(stack, "switch", AGENT, "r3", "--no-probe", "--reason", "forced")
    assert (body["route"]["stable"], body["probe"]["status"]) == ("r3", "skipped")
    switches = history(stack, "switch")
    assert [(e["extra"]["probe"], e["after"]["stable"]) for e in switches] == [
        ("skipped", "r3"),
        ("ok", "r2"),
    ]
    assert history(stack, "switch.back")[0]["after"]["stable"] == "r1"


def test_switch_probe_reasons(stack: Stack) -> None:
    for name, url, key in (
        ("r4", f"{stack.fake.url}/v1", "HOLDFAST_TEST_UNSET_KEY"),
        ("r5", "http://127.0.0.1:9/v1", "E2E_PROVIDER_KEY"),
    ):
        stack.ctl(
            "release", "create", AGENT, name, "--model", "m", "--base-url", url,
            "--api-key-env", key,
        )  # fmt: skip
    message = refused(stack, "switch", AGENT, "r4", code="probe_failed")
    assert "$HOLDFAST_TEST_UNSET_KEY is not set in configsvc's environment" in message
    message = refused(stack, "switch", AGENT, "r5", code="probe_failed")
    assert "cannot connect to http://127.0.0.1:9/v1/chat/completions" in message
    stack.ctl("rollout", "start", AGENT, "r2", "--steps", "10", "--interval", "1h")
    assert "abort or finish it first" in refused(
        stack, "switch", AGENT, "r3", code="rollout_active"
    )
    assert route(stack)["route"]["stable"] == "r1"


def shadow_stats(primary: str, epoch: float, **counts: Any) -> ShadowStats:
    return ShadowStats(primary=primary, shadow="r3", epoch=epoch, **counts)


async def test_shadow_report_merges_the_current_epoch(stack: Stack, store: EtcdStore) -> None:
    body = js(stack, "shadow", "set", AGENT, "r3", "--percent", "25", "--min-samples", "20")
    since = body["route"]["shadow"]["since"]
    keyspace = Keyspace(stack.env)
    lease = await store.grant_lease(60)

    def snap(sidecar: str, agent: str, *stats: ShadowStats) -> HealthSnapshot:
        return HealthSnapshot(
            sidecar_id=sidecar, agent=agent, at=since, started_at=since, config_revision=1,
            shadow=stats,
        )  # fmt: skip

    a = snap(
        "side-a", AGENT,
        shadow_stats("r1", since, samples=10, similarity_sum=9.0, similarity_min=0.7,
                     tool_agree=9, tool_samples=10, token_samples=10, primary_completion_tokens=100,
                     shadow_completion_tokens=130, primary_latency_ms_sum=1000.0,
                     shadow_latency_ms_sum=1500.0, shadow_errors=1, skipped=2),
        shadow_stats("r2", since, samples=5, similarity_sum=5.0, similarity_min=1.0,
                     tool_agree=5, tool_samples=5, token_samples=5, primary_completion_tokens=50,
                     shadow_completion_tokens=50, primary_latency_ms_sum=500.0,
                     shadow_latency_ms_sum=450.0),
    )  # fmt: skip
    b = snap(
        "side-b", AGENT,
        shadow_stats("r1", since, samples=5, similarity_sum=3.0, similarity_min=0.4,
                     tool_agree=4, tool_samples=5, token_samples=5, primary_completion_tokens=40,
                     shadow_completion_tokens=55, primary_latency_ms_sum=400.0,
                     shadow_latency_ms_sum=700.0, skipped=1),
        # an earlier shadow of the same release: never mixed in
        shadow_stats("r1", since - 100, samples=1000, similarity_sum=0.0, similarity_min=0.0),
    )  # fmt: skip
    other = snap("side-c", "other", shadow_stats("r1", since, samples=99, similarity_sum=0.0))
    for s in (a, b, other):
        await store.put(keyspace.health(s.sidecar_id), s.encode(), lease=lease)
    await store.put(keyspace.health("side-junk"), b"\x00not msgpack", lease=lease)

    report = js(stack, "shadow", "report", AGENT)
    total = report["total"]
    assert total["samples"] == 20
    assert total["mean_similarity"] == pytest.approx(17.0 / 20)
    assert total["min_similarity"] == pytest.approx(0.4)
    assert total["tool_agreement"] == pytest.approx(18 / 20)
    assert total["mean_completion_token_delta"] == pytest.approx((235 - 190) / 20)
    assert total["mean_latency_delta_ms"] == pytest.approx((2650 - 1900) / 20)
    assert (total["shadow_errors"], total["skipped"]) == (1, 3)
    assert (report["sidecars"], report["unreadable_snapshots"]) == (2, 1)
    assert report["by_primary"]["r1"]["samples"] == 15
    assert report["by_primary"]["r2"]["mean_latency_delta_ms"] == pytest.approx(-10.0)
    assert (report["verdict"], report["reasons"]) == ("ready", [])

    report = js(stack, "shadow", "report", AGENT, "--min-samples", "21")
    assert (report["verdict"], report["reasons"]) == ("insufficient_data", ["samples 20 < 21"])
    out = stack.ctl("shadow", "report", AGENT, "--min-similarity", "0.9").stdout
    assert "verdict:    not_ready (mean similarity 0.850 < 0.9)" in out
    assert out.splitlines()[-1].split() == [
        "total", "20", "0.850", "0.400", "0.900", "+2.2", "+37.5", "1", "3",
    ]  # fmt: skip

    # a new shadow is a new epoch: nothing reported yet
    js(stack, "shadow", "set", AGENT, "r3", "--percent", "25")
    report = js(stack, "shadow", "report", AGENT)
    assert (report["total"]["samples"], report["verdict"]) == (0, "insufficient_data")
    stack.ctl("shadow", "clear", AGENT)
    assert "has no shadow" in refused(stack, "shadow", "report", AGENT, code="conflict")
    await store.revoke_lease(lease)


def test_concurrent_canary_sets_apply_in_sequence(stack: Stack) -> None:
    results: dict[int, Any] = {}

    def run(percent: int) -> None:
        results[percent] = stack.ctl(
            "--json", "canary", "set", AGENT, "r2", "--percent", str(percent), check=False
        )

    threads = [threading.Thread(target=run, args=(p,)) for p in range(1, 11)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = {p for p, r in results.items() if r.returncode == 0}
    for p, r in results.items():
        if p not in won:
            error = json.loads(r.stdout)["error"]
            assert (r.returncode, error["code"]) == (1, "revision_conflict"), r.stderr
            assert "nothing was written" in error["message"]
    assert won
    sets = history(stack, "canary.set")
    assert sorted(e["after"]["canary_percent"] for e in sets) == sorted(float(p) for p in won)
    # each write saw the one before it: a chain of before -> after, no lost update
    chain = sorted(sets, key=lambda e: e["revision"])
    for earlier, later in itertools.pairwise(chain):
        assert later["before"]["canary_percent"] == earlier["after"]["canary_percent"]
    final = route(stack)
    assert final["route"]["canary_percent"] == chain[-1]["after"]["canary_percent"]
    assert final["mod_revision"] == chain[-1]["revision"]


async def test_etcd_down_is_503_and_nothing_changes(fresh_etcd: EtcdNode) -> None:
    # configsvc in-process, with a short store timeout so that four refusals take seconds
    store = EtcdStore([fresh_etcd.client_url], timeout=1.0)
    await store.connect()
    service = ConfigService(store, Keyspace("down"))
    prober = Prober(timeout=2.0, prompt="ping")
    await prober.start()
    pins = PinOps(service)
    app = build_app(
        service, Authorizer(TOKEN), extra=[TrafficApi(TrafficOps(service, prober, pins), pins)]
    )
    runner, port = await start_site(app, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}/v1/agents/{AGENT}"
    try:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            for name in ("r1", "r2"):
                new = {"release": name, "model": "m", "base_url": "http://127.0.0.1:9/v1"}
                async with http.post(f"{url}/releases", json=new) as resp:
                    assert resp.status == 201
            async with http.put(f"{url}/route/stable", json={"release": "r1"}) as resp:
                before = await resp.json()
            fresh_etcd.stop()
            calls: list[tuple[str, str, dict[str, Any] | None]] = [
                ("PUT", "canary", {"release": "r2", "percent": 10}),
                ("POST", "switch", {"release": "r2", "probe": False}),
                ("PUT", "shadow", {"release": "r2", "percent": 5}),
                ("POST", "pins/migrate", {"from": "r1", "to": "r2"}),
                ("GET", "shadow/report", None),
            ]
            for method, path, body in calls:
                async with http.request(method, f"{url}/{path}", json=body) as resp:
                    error = (await resp.json())["error"]
                    assert (resp.status, error["code"]) == (503, "store_unavailable"), path
                    assert "etcd is unavailable" in error["message"]
            fresh_etcd.start().wait_ready()
            async with http.get(f"{url}/route") as resp:
                after = await resp.json()
            assert (after["route"], after["mod_revision"]) == (
                before["route"],
                before["mod_revision"],
            )
    finally:
        await runner.cleanup()
        await prober.close()
        await store.close()


PROBE_PROMPT = "holdfast warm-up: answer with one word"


def test_probe_timeout_and_prompt_come_from_configsvc_settings(
    tmp_path: Path, etcd_node: EtcdNode, etcd_env: str
) -> None:
    """``--probe-timeout`` bounds the warm-up (the switch is refused, naming it), and the probe
    asks what ``HOLDFAST_PROBE_PROMPT`` says."""
    fake = procs.fakellm(tmp_path / "logs").start()
    token, key = secrets.token_hex(8), "sk-" + secrets.token_hex(8)
    svc = procs.configsvc(
        tmp_path / "logs", [etcd_node.client_url], etcd_env, token, "--probe-timeout", "0.5"
    )
    svc.env |= {KEY_VAR: key, ENV_PROBE_PROMPT: PROBE_PROMPT}
    stack = Stack(base=tmp_path, env=etcd_env, fake=fake, svc=svc.start(), token=token)
    stack.provider_key = key
    try:
        stack.create_releases(("r1", "model-one"), ("r2", "model-two"))
        stack.set_stable("r1")
        fake_control(stack, "model-two", {"latency_ms": 3000})
        before = route(stack)["mod_revision"]
        message = refused(stack, "switch", AGENT, "r2", code="probe_failed")  # 0.5 s < 3 s
        assert f"no answer from {fake.url}/v1/chat/completions within 0.5s" in message
        assert route(stack)["mod_revision"] == before
        probes = [r for r in fake_requests(stack) if r["body"].get("model") == "model-two"]
        assert probes and probes[-1]["body"]["messages"] == [
            {"role": "user", "content": PROBE_PROMPT}
        ]

        fake_control(stack, "model-two", {"latency_ms": 100})  # well inside the timeout
        body = js(stack, "switch", AGENT, "r2")
        assert (body["route"]["stable"], body["probe"]["status"]) == ("r2", "ok")
        assert body["probe"]["latency_ms"] >= 100
    finally:
        stack.stop()
