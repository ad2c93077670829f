"""Shadow end to end: real sidecar process, real fake upstream, health through etcd, and
``holdfastctl shadow report`` -- whose numbers must equal what the fake's known answers give."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from holdfast.compare import answer_from_completion, similarity, tools_agree
from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import AGENT, Stack

pytestmark = pytest.mark.etcd

QUESTIONS = [f"question {i}: where is my order number {i * 7}?" for i in range(12)]


def body(question: str, model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": question}]}


async def fake_answer(http: aiohttp.ClientSession, stack: Stack, question: str, model: str) -> Any:
    """Ask the fake directly, as the sidecar's provider, for the answer it gives ``model``."""
    headers = {"Authorization": f"Bearer {stack.provider_key}"}
    async with http.post(
        f"{stack.fake.url}/v1/chat/completions", json=body(question, model), headers=headers
    ) as resp:
        assert resp.status == 200
        return answer_from_completion(await resp.read())


def report(stack: Stack) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(stack.ctl("--json", "shadow", "report", AGENT).stdout)
    return out


async def test_shadow_report_matches_the_fake_upstreams_known_answers(
    stack: Stack, etcd_node: EtcdNode, tmp_path: Path
) -> None:
    side = stack.start_sidecar(
        [etcd_node.client_url],
        args=("--health-interval", "0.3", "--shadow-max-concurrency", str(len(QUESTIONS))),
    )
    stack.ctl(
        "shadow",
        "set",
        AGENT,
        "r2",
        "--percent",
        "100",
        "--min-samples",
        str(len(QUESTIONS)),
        "--min-similarity",
        "0.95",
    )
    async with aiohttp.ClientSession() as http:
        # the shadow's model answers longer and slower: known token and latency deltas
        shadow_model = {"completion_tokens": 20, "latency_ms": 60}
        async with http.put(f"{stack.fake.url}/_control/models/model-two", json=shadow_model):
            pass
        deadline = time.monotonic() + 10
        while True:  # the sidecar has the shadow once its route shows it
            async with http.get(f"{side.url}/status") as resp:
                if ((await resp.json()).get("route") or {}).get("shadow"):
                    break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        for i, question in enumerate(QUESTIONS):
            payload = body(question, AGENT) | ({"stream": True} if i % 2 else {})
            async with http.post(f"{side.url}/v1/chat/completions", json=payload) as resp:
                assert resp.status == 200 and resp.headers["X-Holdfast-Release"] == "r1"
                await resp.read()
        pairs = [
            (
                await fake_answer(http, stack, q, "model-one"),
                await fake_answer(http, stack, q, "model-two"),
            )
            for q in QUESTIONS
        ]
    scores = [similarity(a.text, b.text) for a, b in pairs]
    deadline = time.monotonic() + 15
    while (got := report(stack))["total"]["samples"] < len(QUESTIONS):
        assert time.monotonic() < deadline, got
        await asyncio.sleep(0.2)
    total = got["total"]
    assert total["samples"] == len(QUESTIONS) and got["sidecars"] == 1
    assert total["mean_similarity"] == pytest.approx(sum(scores) / len(scores))
    assert total["min_similarity"] == pytest.approx(min(scores))
    assert total["tool_agreement"] == 1.0  # neither model called a tool
    # streamed primaries (odd questions) carry no usage: token deltas cover the others only
    deltas = [b.completion_tokens - a.completion_tokens for a, b in pairs[::2]]
    assert total["token_samples"] == len(deltas)
    assert total["mean_completion_token_delta"] == pytest.approx(sum(deltas) / len(deltas))
    assert total["mean_completion_token_delta"] > 0
    assert total["mean_latency_delta_ms"] > 30  # 60 ms of extra latency, minus the noise
    assert total["shadow_errors"] == 0
    assert min(scores) < 0.95  # different models answer differently...
    assert got["verdict"] == "not_ready"  # ...so the 0.95 similarity bar is not met
    assert any("similarity" in reason for reason in got["reasons"])
    human = stack.ctl("shadow", "report", AGENT).stdout
    assert "not_ready" in human and str(len(QUESTIONS)) in human


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "parameters": {
                "type": "object",
                "properties": {"order": {"type": "integer"}},
                "required": ["order"],
            },
        },
    },
    {"type": "function", "function": {"name": "ping", "parameters": {"type": "object"}}},
]
# Without tools: both models answer in text (agree). "call:ping": both call ping with {}
# (agree). Tools and no hint: the primary's model answers in text while the shadow's, with tool
# calls on, calls one (disagree).
TOOL_CASES = [(f"no tools {i}", False) for i in range(4)]
TOOL_CASES += [(f"call:ping for order {i}", True) for i in range(4)]
TOOL_CASES += [(f"where is order {i * 11}?", True) for i in range(4)]


def tool_body(question: str, with_tools: bool, model: str) -> dict[str, Any]:
    return body(question, model) | ({"tools": TOOLS} if with_tools else {})


async def test_tool_disagreement_in_the_report_matches_the_fake_upstreams_answers(
    stack: Stack, etcd_node: EtcdNode
) -> None:
    side = stack.start_sidecar(
        [etcd_node.client_url],
        args=("--health-interval", "0.3", "--shadow-max-concurrency", str(len(TOOL_CASES))),
    )
    stack.ctl(
        "shadow", "set", AGENT, "r2", "--percent", "100", "--min-samples", str(len(TOOL_CASES)),
        "--min-similarity", "0", "--min-agreement", "0.9",
    )  # fmt: skip
    headers = {"Authorization": f"Bearer {stack.provider_key}"}
    async with aiohttp.ClientSession() as http:
        async with http.put(
            f"{stack.fake.url}/_control/models/model-two", json={"tool_calls": True}
        ) as resp:
            assert resp.status == 200
        deadline = time.monotonic() + 10
        while True:
            async with http.get(f"{side.url}/status") as resp:
                if ((await resp.json()).get("route") or {}).get("shadow"):
                    break
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        for i, (question, with_tools) in enumerate(TOOL_CASES):
            payload = tool_body(question, with_tools, AGENT) | ({"stream": True} if i % 2 else {})
            async with http.post(f"{side.url}/v1/chat/completions", json=payload) as resp:
                assert resp.status == 200 and resp.headers["X-Holdfast-Release"] == "r1"
                await resp.read()
        agree = []
        for question, with_tools in TOOL_CASES:  # the fake's known answers, asked directly
            answers = []
            for model in ("model-one", "model-two"):
                async with http.post(
                    f"{stack.fake.url}/v1/chat/completions",
                    json=tool_body(question, with_tools, model),
                    headers=headers,
                ) as resp:
                    answers.append(answer_from_completion(await resp.read()))
            agree.append(tools_agree(*answers))
            assert bool(answers[1].tool_calls) == with_tools  # the shadow's model used them
    assert agree == [True] * 8 + [False] * 4  # the cases do what they say
    deadline = time.monotonic() + 15
    while (got := report(stack))["total"]["samples"] < len(TOOL_CASES):
        assert time.monotonic() < deadline, got
        await asyncio.sleep(0.2)
    total = got["total"]
    assert (total["samples"], total["shadow_errors"]) == (len(TOOL_CASES), 0)
    assert total["tool_agreement"] == pytest.approx(sum(agree) / len(agree))
    assert (got["verdict"], got["reasons"]) == (
        "not_ready",
        [f"tool agreement {sum(agree) / len(agree):.3f} < 0.9"],
    )
    lowered = json.loads(
        stack.ctl("--json", "shadow", "report", AGENT, "--min-agreement", "0.6").stdout
    )
    assert (lowered["verdict"], lowered["reasons"]) == ("ready", [])  # 0.667 meets 0.6
