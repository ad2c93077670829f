"""Cost limits end to end: the price table through holdfastctl (bad tables refused with the
reason, audited), and two real sidecars sharing one agent cost budget through etcd slices."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import aiohttp

from holdfast_devtools import procs
from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import AGENT, Stack, get_json, wait_for

SCOPE = f"agent:{AGENT}"
LIMIT_USD = Decimal("0.004")
FAST = ("--budget-report-interval", "0.2")


def test_price_table_refuses_bad_entries_and_audits_changes(stack: Stack) -> None:
    for args, reason in [
        (("--input", "-1", "--output", "1"), "must not be negative"),
        (("--input", "abc", "--output", "1"), "must be a number"),
        (("--input", "1e9", "--output", "1"), "is over 10000 USD"),
        (("--input", "0.0000001", "--output", "1"), "more than 6 decimals"),
    ]:
        bad = stack.ctl("price", "set", "model-one", *args, check=False)
        assert bad.returncode != 0 and reason in bad.stderr, bad.stderr
    bad = stack.ctl("price", "set", "no spaces", "--input", "1", "--output", "1", check=False)
    assert bad.returncode != 0 and "invalid model" in bad.stderr
    assert "no prices" in stack.ctl("price", "list").stdout  # nothing was written
    stack.ctl("price", "set", "org/model-x:1", "--input", "2.5", "--output", "10")
    stack.ctl("price", "set", "model-one", "--input", "2", "--output", "8", "--reason", "q3")
    listed = json.loads(stack.ctl("--json", "price", "list").stdout)
    assert listed["prices"]["model-one"] == {"input_per_1m": "2", "output_per_1m": "8"}
    assert listed["prices"]["org/model-x:1"]["input_per_1m"] == "2.5"
    stack.ctl("price", "delete", "org/model-x:1")
    gone = stack.ctl("price", "delete", "org/model-x:1", check=False)
    assert gone.returncode != 0 and "no price" in gone.stderr
    history = stack.ctl("--json", "history").stdout
    assert history.count('"price.set"') == 2 and history.count('"price.delete"') == 1


async def test_unknown_fields_are_refused_by_name(stack: Stack) -> None:
    headers = {"Authorization": f"Bearer {stack.token}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        body = {"input_per_1m": 1, "output_per_1m": 1, "cached_per_1m": 0.1}
        async with http.put(f"{stack.svc.url}/v1/prices/model-one", json=body) as resp:
            error = (await resp.json())["error"]
            assert resp.status == 400 and "cached_per_1m" in error["message"]


async def cost_scope(sidecar: procs.ManagedProcess) -> dict[str, Any]:
    _, body = await get_json(f"{sidecar.url}/status")
    [scope] = [s for s in body["budgets"]["scopes"] if s["scope"] == SCOPE and s["unit"] == "usd"]
    return dict(scope)


async def test_two_sidecars_share_an_agent_cost_budget_and_never_exceed_it(
    stack: Stack, etcd_node: EtcdNode
) -> None:
    stack.ctl("price", "set", "model-one", "--input", "2", "--output", "8")
    stack.ctl(
        "budget", "set", SCOPE, "--cost", str(LIMIT_USD), "--window", "1d", "--request-cap", "20"
    )
    async with aiohttp.ClientSession() as http:
        await http.put(
            f"{stack.fake.url}/_control/models/model-one", json={"completion_tokens": 20}
        )
    sidecars = stack.start_sidecars(
        [etcd_node.client_url], [f"cost{i}" for i in range(2)], args=FAST
    )
    for s in sidecars:
        await wait_for(
            f"{s.url}/status",
            lambda b: any(
                x["scope"] == SCOPE and x.get("unit") == "usd" and Decimal(x["allowance"]) > 0
                for x in (b.get("budgets") or {}).get("scopes", [])
            ),
        )

    async def one(http: aiohttp.ClientSession, i: int) -> int:
        payload = {"model": AGENT, "messages": [{"role": "user", "content": f"q{i}"}]}
        async with http.post(
            f"{sidecars[i % 2].url}/v1/chat/completions",
            json=payload,
            headers={"X-Holdfast-Session": f"c-{i}"},
        ) as resp:
            body = await resp.json()
            if resp.status == 429:
                assert body["error"]["param"] == SCOPE
                assert (
                    "cost budget" in body["error"]["message"] and "USD" in body["error"]["message"]
                )
            return resp.status

    async with aiohttp.ClientSession() as http:
        statuses = await asyncio.gather(*(one(http, i) for i in range(60)))
    assert statuses.count(200) > 3 and statuses.count(429) > 0, statuses
    assert set(statuses) <= {200, 429}
    for _ in range(100):
        scopes = [await cost_scope(s) for s in sidecars]
        if all(Decimal(s["reserved"]) == 0 for s in scopes):
            break
        await asyncio.sleep(0.05)
    spent = sum(Decimal(s["spent"]) for s in scopes)
    assert spent <= LIMIT_USD  # the fleet never spent beyond the cost limit
    # charged exactly the real usage at the table's price (whole-dollar prices: no rounding)
    _, stats = await get_json(f"{stack.fake.url}/_control/stats")
    model = stats["models"]["model-one"]
    real = Decimal(model["prompt_tokens"] * 2 + model["completion_tokens"] * 8) / 1_000_000
    assert spent == real, (spent, real)
    for _ in range(100):
        usage = json.loads(stack.ctl("--json", "budget", "usage", SCOPE).stdout)["usage"]
        if Decimal(usage["cost"]["used"]) == spent:
            break
        await asyncio.sleep(0.1)
    assert Decimal(usage["cost"]["used"]) == spent and usage["unit"] == "usd"
    human = stack.ctl("budget", "usage", SCOPE).stdout
    assert f"of {LIMIT_USD} USD" in human, human
    metrics = ""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sidecars[0].url}/metrics") as resp:
            metrics = await resp.text()
    assert f'holdfast_budget_limit_usd{{agent="{AGENT}",scope="{SCOPE}"}} 0.004' in metrics
    assert "holdfast_budget_charged_usd_total" in metrics
