"""Token budgets on the real sidecar app against the real fake upstream: admission, refusals,
request caps, usage stripping, cut streams, degrade, soft header, shadow traffic."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from holdfast.keyspace import Route, Shadow
from holdfast.keyspace.budget import Budget
from holdfast_devtools import procs
from sidecar.budgets.filter import BudgetFilter, BudgetOptions
from sidecar.budgets.ledger import Ledger
from sidecar.budgets.meter import Meter
from sidecar.budgets.metrics import BudgetMetrics
from sidecar.config.state import ConfigState
from sidecar.ops.metrics import SidecarMetrics
from tests.servers import conftest
from tests.servers.conftest import AGENT, KS, SidecarUnderTest

SESSION = "sess-budget-1"
MESSAGES = [{"role": "user", "content": "tell me about the weather"}]


async def start_budgeted(
    fakellm: procs.ManagedProcess,
    parts: dict[str, Any] | None = None,
    **over: Any,
) -> tuple[SidecarUnderTest, Ledger]:
    """The conftest sidecar with the budget filter in its chain (as Sidecar.build_app does).
    aiohttp's TestServer cancels a handler whose agent hangs up, as ``holdfast-sidecar`` does."""
    async with aiohttp.ClientSession() as http:
        await http.post(f"{fakellm.url}/_control/reset")
    ledger = Ledger(agent=AGENT)

    def budget(config: ConfigState, metrics: SidecarMetrics) -> BudgetFilter:
        options = BudgetOptions(agent=AGENT, default_cap=64, estimator="bytes")
        budget_metrics = BudgetMetrics(metrics.registry, AGENT, ledger)
        return BudgetFilter(ledger, config, options, budget_metrics)

    sut = await conftest.start_sidecar(fakellm.url, budget=budget, parts=parts, **over)
    sut.add_release("r1", "model-one")
    sut.add_release("r2", "model-two")
    sut.set_stable("r1")
    return sut, ledger


@pytest.fixture
async def budgeted(
    fakellm: procs.ManagedProcess,
) -> AsyncIterator[tuple[SidecarUnderTest, Ledger]]:
    sut, ledger = await start_budgeted(fakellm)
    yield sut, ledger
    await sut.server.close()


def put_budget(sut: SidecarUnderTest, **fields: Any) -> None:
    budget = Budget(**{"scope": f"session:{SESSION}", "window": "1h", **fields})
    sut._put(KS.budget(budget.scope), budget.encode())


def meter(ledger: Ledger, scope: str = f"session:{SESSION}") -> Meter:
    return ledger.meters[scope]


async def chat(sut: SidecarUnderTest, **body: Any) -> aiohttp.ClientResponse:
    payload = {"model": AGENT, "messages": MESSAGES, **body}
    async with aiohttp.ClientSession() as http:
        resp = await http.post(
            f"{sut.url}/v1/chat/completions",
            json=payload,
            headers={"X-Holdfast-Session": SESSION},
        )
        await resp.read()
        return resp


async def stream_lines(
    sut: SidecarUnderTest, *, cut_after: int | None = None, **body: Any
) -> list[str]:
    """Stream a chat; with ``cut_after``, hang up after that many content chunks."""
    payload = {"model": AGENT, "messages": MESSAGES, "stream": True, **body}
    events: list[str] = []
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sut.url}/v1/chat/completions", json=payload, headers={"X-Holdfast-Session": SESSION}
        ) as resp:
            assert resp.status == 200, await resp.text()
            content = 0
            async for raw in resp.content:
                line = raw.decode().strip()
                if not line:
                    continue
                events.append(line)
                if line.startswith("data: {"):
                    choices = json.loads(line[5:]).get("choices") or [{}]
                    content += bool(choices[0].get("delta", {}).get("content"))
                if cut_after is not None and content >= cut_after:
                    resp.close()
                    break
    return events


def usages(events: list[str]) -> list[dict[str, Any]]:
    parsed = [json.loads(e[5:]) for e in events if e.startswith("data: {")]
    return [p["usage"] for p in parsed if p.get("usage")]


async def fake(sut: SidecarUnderTest, method: str, path: str, body: Any = None) -> Any:
    async with aiohttp.ClientSession() as http:
        async with http.request(method, f"{sut.fake_url}{path}", json=body) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


async def settled(ledger: Ledger, scope: str = f"session:{SESSION}") -> Meter:
    for _ in range(200):
        if meter(ledger, scope).tally.reserved == 0:
            break
        await asyncio.sleep(0.01)
    return meter(ledger, scope)


def spend_to(m: Meter, total: int) -> None:
    """Charge the meter's current (rolling) bucket so that it has spent ``total``."""
    buckets = m.tally.buckets
    m.tally.charge(buckets.current if buckets is not None else 0, total - m.tally.spent)


async def test_cap_written_usage_charged_then_refused_with_openai_shape(
    budgeted: tuple[SidecarUnderTest, Ledger],
) -> None:
    sut, ledger = budgeted
    put_budget(sut, tokens=400, request_cap=32)
    ok = await chat(sut)
    assert ok.status == 200
    sent = (await fake(sut, "GET", "/_control/requests"))["requests"][-1]["body"]
    assert sent["max_tokens"] == 32  # the tightest cap was written into the request
    body = await ok.json()
    m = await settled(ledger)
    assert m.tally.spent == body["usage"]["total_tokens"] and m.tally.estimated == 0
    spend_to(m, 399)  # as if the window were nearly used up
    refused = await chat(sut, max_tokens=10)
    assert refused.status == 429
    error = (await refused.json())["error"]
    assert error["code"] == "budget_exhausted" and error["type"] == "insufficient_quota"
    assert error["param"] == f"session:{SESSION}"
    assert (
        "limit 400 tokens per 1h (rolling)" in error["message"] and "399 used" in error["message"]
    )
    assert 1 <= int(refused.headers["Retry-After"]) <= 3660  # rolling: W + one sub-bucket
    assert refused.headers["X-Holdfast-Release"] == "r1"
    bad = await chat(sut, max_tokens="lots")
    assert bad.status == 400 and (await bad.json())["error"]["param"] == "max_tokens"


async def test_stream_usage_is_requested_and_stripped_unless_asked(
    budgeted: tuple[SidecarUnderTest, Ledger],
) -> None:
    sut, ledger = budgeted
    put_budget(sut, tokens=100_000)
    events = await stream_lines(sut, max_tokens=20)
    assert events[-1] == "data: [DONE]"
    assert not usages(events)  # what the agent sees without Holdfast
    sent = (await fake(sut, "GET", "/_control/requests"))["requests"][-1]["body"]
    assert sent["stream_options"] == {"include_usage": True}
    m = await settled(ledger)
    first = m.tally.spent
    assert first > 0 and m.tally.estimated == 0
    events = await stream_lines(sut, max_tokens=20, stream_options={"include_usage": True})
    usage = usages(events)
    assert len(usage) == 1
    m = await settled(ledger)
    assert m.tally.spent - first == usage[0]["total_tokens"]


async def test_cut_streams_are_charged_for_what_was_produced(
    budgeted: tuple[SidecarUnderTest, Ledger],
) -> None:
    sut, ledger = budgeted
    put_budget(sut, tokens=100_000)
    await fake(
        sut, "PUT", "/_control/models/model-one", {"token_interval_ms": 20, "completion_tokens": 40}
    )
    await stream_lines(sut, cut_after=5)  # the client hangs up
    m = await settled(ledger)
    stats = (await fake(sut, "GET", "/_control/stats"))["models"]["model-one"]
    produced = stats["completion_tokens"]
    assert 5 <= produced < 40
    prompt_estimate = m.tally.spent - produced
    assert m.tally.estimated == m.tally.spent and prompt_estimate >= stats["prompt_tokens"]
    await fake(sut, "PUT", "/_control/models/model-one", {"reset_after_tokens": 7})
    await stream_lines(sut)  # the provider breaks the stream
    m = await settled(ledger)
    stats = (await fake(sut, "GET", "/_control/stats"))["models"]["model-one"]
    assert m.tally.spent - 2 * prompt_estimate == stats["completion_tokens"] == produced + 7


async def test_degrade_serves_the_cheaper_release_without_repinning(
    budgeted: tuple[SidecarUnderTest, Ledger],
) -> None:
    sut, ledger = budgeted
    put_budget(sut, tokens=50, action="degrade", degrade_to="r2")
    resp = await chat(sut, max_tokens=10)
    assert resp.status == 200
    assert resp.headers["X-Holdfast-Release"] == "r2"
    assert resp.headers["X-Holdfast-Budget-Degraded"] == f"session:{SESSION}"
    assert (await fake(sut, "GET", "/_control/requests"))["requests"][-1]["model"] == "model-two"
    entry = sut.pins.get(SESSION)
    assert entry is not None and entry.pin.release == "r1"  # the session keeps its release
    assert meter(ledger).tally.degraded == 1 and meter(ledger).tally.spent == 0
    sut._put(
        KS.budget(f"session:{SESSION}"),
        Budget(scope=f"session:{SESSION}", tokens=10**6, window="1h").encode(),
    )
    back = await chat(sut, max_tokens=10)
    assert back.headers["X-Holdfast-Release"] == "r1"  # room again: back on its own release


async def test_soft_limit_header(budgeted: tuple[SidecarUnderTest, Ledger]) -> None:
    sut, ledger = budgeted
    put_budget(sut, tokens=10_000, soft=0.5)
    resp = await chat(sut, max_tokens=8)
    assert "X-Holdfast-Budget-Remaining" not in resp.headers
    spend_to(meter(ledger), 6000)
    resp = await chat(sut, max_tokens=8)
    remaining, scope = resp.headers["X-Holdfast-Budget-Remaining"].split("; scope=")
    assert scope == f"session:{SESSION}" and 3000 < int(remaining) < 4000


async def test_shadow_traffic_never_spends_the_budget(
    budgeted: tuple[SidecarUnderTest, Ledger],
) -> None:
    sut, ledger = budgeted
    put_budget(sut, tokens=100_000)
    shadow = Shadow(release="r2", percent=100.0, since=1_700_000_000.0)
    sut._put(KS.route(AGENT), Route(agent=AGENT, stable="r1", shadow=shadow).encode())
    resp = await chat(sut, max_tokens=16)
    usage = (await resp.json())["usage"]
    for _ in range(200):
        models = (await fake(sut, "GET", "/_control/stats"))["models"]
        if "model-two" in models and not models["model-two"]["in_flight"]:
            break
        await asyncio.sleep(0.01)
    assert models["model-two"]["requests"] == 1  # the shadow call did go out...
    m = await settled(ledger)
    assert m.tally.spent == usage["total_tokens"]  # ...and only the primary was charged
