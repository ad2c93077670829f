"""The signals filter on a real in-process sidecar against the fake upstream: /status, /metrics."""

from __future__ import annotations

from typing import Any

import aiohttp

from holdfast.keyspace import Route
from holdfast.keyspace.categories import CategoryRule
from holdfast_devtools import procs
from tests.servers.conftest import AGENT, KS, SidecarUnderTest


async def chat(
    http: aiohttp.ClientSession, sut: SidecarUnderTest, category: str | None, **extra: Any
) -> int:
    headers = {"X-Holdfast-Session": "s-1"}
    if category:
        headers["X-Holdfast-Category"] = category
    body = {"model": AGENT, "messages": [{"role": "user", "content": "hello"}], **extra}
    async with http.post(f"{sut.url}/v1/chat/completions", json=body, headers=headers) as resp:
        await resp.read()
        return resp.status


async def test_signals_per_release_and_category_reach_status_and_metrics(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    async with aiohttp.ClientSession() as http:
        assert await chat(http, sidecar, "billing") == 200
        assert await chat(http, sidecar, "billing", stream=True) == 200  # no usage: estimated
        opts = {"stream": True, "stream_options": {"include_usage": True}}
        assert await chat(http, sidecar, None, **opts) == 200
        async with http.put(
            f"{fakellm.url}/_control/models/model-one", json={"error_rate": 1.0}
        ) as resp:
            assert resp.status == 200
        try:
            assert await chat(http, sidecar, "billing") == 500
        finally:
            await http.delete(f"{fakellm.url}/_control/models/model-one")
        async with http.get(f"{sidecar.url}/status") as resp:
            status = await resp.json()
        async with http.get(f"{sidecar.url}/metrics") as resp:
            metrics = await resp.text()
    r1 = status["signals"]["releases"]["r1"]
    assert r1["requests"] == 4 and r1["errors"] == {"upstream_5xx": 1}
    assert r1["categories"] == ["billing", "default"]
    assert r1["tokens_out"] == 3 * 12 and r1["tokens_estimated_answers"] == 1
    assert r1["p95_ms"] is not None and r1["empty_rate"] == 0
    assert status["signals"]["sessions_tracked"] == 1
    assert (
        'gen_ai_client_token_usage_count{agent="support",gen_ai_token_type="output",'
        'holdfast_category="billing",holdfast_release="r1"} 2.0'
    ) in metrics
    assert (
        'holdfast_release_requests_total{agent="support",error_class="upstream_5xx",'
        'holdfast_category="billing",holdfast_release="r1"} 1.0'
    ) in metrics
    assert 'shape="estimated"' in metrics


async def test_an_invalid_category_counts_as_other(sidecar: SidecarUnderTest) -> None:
    async with aiohttp.ClientSession() as http:
        assert await chat(http, sidecar, "bad category!") == 200
        async with http.get(f"{sidecar.url}/status") as resp:
            status = await resp.json()
    assert status["signals"]["releases"]["r1"]["categories"] == ["other"]


async def test_latency_ttft_and_session_spend_reach_metrics_and_status_per_category(
    sidecar: SidecarUnderTest,
) -> None:
    rules = (CategoryRule(category="billing", keywords=("refund",)),)
    sidecar._put(KS.route(AGENT), Route(agent=AGENT, stable="r1", categories=rules).encode())
    async with aiohttp.ClientSession() as http:
        opts = {"stream": True, "stream_options": {"include_usage": True}}
        body = {"model": AGENT, "messages": [{"role": "user", "content": "a REFUND?"}], **opts}
        async with http.post(
            f"{sidecar.url}/v1/chat/completions", json=body, headers={"X-Holdfast-Session": "s-9"}
        ) as resp:
            assert resp.status == 200
            await resp.read()
        assert await chat(http, sidecar, None) == 200  # no header, no rule: default
        async with http.get(f"{sidecar.url}/status") as resp:
            status = await resp.json()
        async with http.get(f"{sidecar.url}/metrics") as resp:
            metrics = await resp.text()
    r1 = status["signals"]["releases"]["r1"]
    assert r1["categories"] == ["billing", "default"]
    assert r1["ttft_p95_ms"] is not None
    assert r1["sessions"]["sessions"] == 2 and r1["sessions"]["tokens_mean"] > 0
    assert (
        'gen_ai_server_time_to_first_token_seconds_count{agent="support",'
        'holdfast_category="billing",holdfast_release="r1"} 1.0'
    ) in metrics
    assert (
        'gen_ai_client_operation_duration_seconds_count{agent="support",'
        'gen_ai_operation_name="chat",holdfast_category="default",holdfast_release="r1"} 1.0'
    ) in metrics
    assert 'holdfast_session_tokens_gcount{agent="support",holdfast_release="r1"} 2.0' in metrics
