"""A route's category rules end to end: set with holdfastctl, refused when bad, applied by a real
sidecar, and visible per category in configsvc's fleet status."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import AGENT, Stack

pytestmark = pytest.mark.etcd


async def chat(http: aiohttp.ClientSession, url: str, text: str, **headers: str) -> str:
    body = {"model": AGENT, "messages": [{"role": "user", "content": text}]}
    async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        return resp.headers["X-Holdfast-Config-Revision"]


async def test_rules_categorise_requests_in_the_fleet_status(
    stack: Stack, etcd_node: EtcdNode, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"category": "legal", "pattern": "(unclosed"}]))
    refused = stack.ctl("route", "categories", AGENT, "--file", str(bad), check=False)
    assert refused.returncode != 0 and "not valid RE2" in refused.stderr
    rules = tmp_path / "rules.json"
    rules.write_text(
        json.dumps(
            {
                "rules": [
                    {"category": "billing", "keywords": ["refund", "invoice"]},
                    {"category": "legal", "pattern": r"\bGDPR\b"},
                ]
            }
        )
    )
    out = stack.ctl("route", "categories", AGENT, "--file", str(rules), "--reason", "triage")
    assert "2 category rule(s)" in out.stdout
    shown = stack.ctl("route", "show", AGENT).stdout
    assert "billing" in shown and "refund, invoice" in shown and r"\bGDPR\b" in shown
    history = json.loads(stack.ctl("--json", "history", "--agent", AGENT).stdout)
    assert history["entries"][0]["action"] == "route.set_categories"
    sidecar = stack.start_sidecar([etcd_node.client_url], args=("--health-interval", "0.5"))
    route_revision = str(json.loads(stack.ctl("--json", "route", "show", AGENT).stdout)[
        "mod_revision"
    ])  # fmt: skip
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 15
        while int(await chat(http, sidecar.url, "warm up")) < int(route_revision):
            assert time.monotonic() < deadline, "the sidecar never saw the rules"
            await asyncio.sleep(0.1)
        for _ in range(3):
            await chat(http, sidecar.url, "Where is my REFUND?")
        await chat(http, sidecar.url, "About GDPR")
        await chat(http, sidecar.url, "refund", **{"X-Holdfast-Category": "vip"})  # header wins

    def categories() -> dict[str, Any]:
        body = json.loads(stack.ctl("--json", "status", AGENT).stdout)
        return body["agents"][0]["releases"]["r1"]["categories"]  # type: ignore[no-any-return]

    deadline = time.monotonic() + 15
    while True:
        found = await asyncio.to_thread(categories)
        # A snapshot may be taken between the requests above: wait until the last one shows.
        if found.get("billing", {}).get("requests") == 3 and "legal" in found and "vip" in found:
            break
        assert time.monotonic() < deadline, found
        await asyncio.sleep(0.2)
    assert found["legal"]["requests"] == 1 and found["vip"]["requests"] == 1
    assert found["default"]["requests"] >= 1  # the warm-up requests matched no rule
    cleared = stack.ctl("route", "categories", AGENT, "--clear")
    assert "0 category rule(s)" in cleared.stdout
