"""Every metric the shipped Grafana dashboard and Prometheus alerting rules name exists in a live
sidecar's or configsvc's /metrics after some traffic: real processes around real etcd, a
release that pins a tool contract, a token and cost budget, a shadow, a flag, a rollout an
operator aborted, and requests of every shape (plain, streamed, calling a tool, through
``POST /tools``, OFREP)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.etcd.spine_stack import AGENT, KEY_VAR, Stack
from tests.observability import named_metrics
from tests.servers.contract_stack import SEARCH_ARGS, SEARCH_V1, backend_server

pytestmark = pytest.mark.etcd
FLAGS = {"flags": {"new-ui": {"state": "ENABLED", "variants": {"on": True, "off": False},
                              "defaultVariant": "off"}}}  # fmt: skip


async def scrape(url: str, token: str = "") -> set[str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/metrics", headers=headers) as resp:
            assert resp.status == 200
            text = await resp.text()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


async def traffic(url: str) -> None:
    chat = f"{url}/v1/chat/completions"
    messages = [{"role": "user", "content": "hello"}]
    tools = [{"type": "function", "function": {"name": "search", "parameters": SEARCH_ARGS}}]
    bodies: list[dict[str, Any]] = [
        {"messages": messages},
        {"messages": messages, "stream": True},  # no usage asked: estimated
        {"messages": messages, "tools": tools, "tool_choice": "required"},
    ]
    async with aiohttp.ClientSession() as http:
        for i, body in enumerate(bodies):
            headers = {"X-Holdfast-Session": f"s-{i}", "X-Holdfast-Category": "billing"}
            async with http.post(chat, json={"model": AGENT, **body}, headers=headers) as resp:
                assert resp.status == 200, await resp.text()
                await resp.read()
        for args in ({"query": "holdfast"}, {"limit": 2}):  # the second breaks the contract
            async with http.post(f"{url}/tools/search", json=args,
                                 headers={"X-Holdfast-Session": "s-0"}) as resp:  # fmt: skip
                assert resp.status == 200, await resp.text()
        async with http.post(f"{url}/ofrep/v1/evaluate/flags/new-ui",
                             json={"context": {"targetingKey": "s-0"}}) as resp:  # fmt: skip
            assert resp.status == 200, await resp.text()


async def test_every_metric_the_dashboard_and_alerts_name_is_exported(
    stack: Stack, tmp_path: Path, etcd_node: Any
) -> None:
    async with backend_server() as backend:
        (tmp_path / "args.json").write_text(json.dumps(SEARCH_ARGS))
        (tmp_path / "result.json").write_text(json.dumps(SEARCH_V1))
        (tmp_path / "flags.json").write_text(json.dumps(FLAGS))
        stack.ctl("contract", "register", "search", "--args", str(tmp_path / "args.json"),
                  "--result", str(tmp_path / "result.json"), "--backend", backend.url)  # fmt: skip
        stack.api().create_release(AGENT, {
            "release": "r4", "model": "model-four", "base_url": f"{stack.fake.url}/v1",
            "api_key_env": KEY_VAR, "contracts": {"search": "1.0.0"},
        })  # fmt: skip
        stack.ctl("route", "set-stable", AGENT, "r4")
        stack.ctl("price", "set", "r4", "--input", "1", "--output", "2")
        stack.ctl("budget", "set", f"agent:{AGENT}", "--tokens", "1000000", "--cost", "100",
                  "--window", "1h")  # fmt: skip
        stack.ctl("flag", "apply", str(tmp_path / "flags.json"))
        stack.ctl("rollout", "start", AGENT, "r3", "--steps", "50,100", "--interval", "1h")
        stack.ctl("rollout", "abort", AGENT, "--reason", "checking the alerts")
        stack.ctl("shadow", "set", AGENT, "r2", "--percent", "100")
        sidecar = stack.start_sidecar([etcd_node.client_url], args=("--health-interval", "0.5"))
        await traffic(sidecar.url)

        wanted = named_metrics()
        deadline = time.monotonic() + 20
        while True:  # the shadow's comparison and configsvc's view of the fleet come after
            exported = await scrape(sidecar.url) | await scrape(stack.svc.url, stack.token)
            missing = sorted(set(wanted) - exported)
            if not missing or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
    assert missing == [], {m: sorted(wanted[m]) for m in missing}
