"""Tier 2: tool contracts on the chat path, against the real fake LLM (tool calls, streaming)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from holdfast_devtools import procs
from tests.servers.conftest import AGENT
from tests.servers.contract_stack import (
    SEARCH_ARGS,
    SEARCH_V1,
    ContractSidecar,
    contract_sidecar,
    sse_payloads,
)

# The fake LLM does not honour "pattern": its arguments for this schema always break it.
CODE_ARGS: dict[str, Any] = {
    "type": "object",
    "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
    "required": ["code"],
}
OTHER_ARGS: dict[str, Any] = {
    "type": "object", "properties": {"q": {"type": "integer"}}, "required": ["q"]
}  # fmt: skip


@pytest.fixture
async def sut(fakellm: procs.ManagedProcess) -> AsyncIterator[ContractSidecar]:
    async with contract_sidecar(fakellm.url) as sidecar:
        sidecar.contract("1.0.0", SEARCH_V1)
        sidecar.contract("1.0.0", {"type": "object"}, tool="airport", args=CODE_ARGS)
        sidecar.release("enf", {"search": "1.0.0", "airport": "1.0.0"}, "enforce")
        sidecar.release("rew", {"search": "1.0.0"}, "rewrite")
        sidecar.release("rep", {"search": "1.0.0", "airport": "1.0.0"}, "report")
        sidecar.stable("enf")
        yield sidecar


def tool(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


async def chat(
    sut: ContractSidecar, release: str, tools: list[Any], text: str, *, stream: bool = False
) -> tuple[int, dict[str, str], bytes]:
    sut.stable(release)
    body = {"model": AGENT, "messages": [{"role": "user", "content": text}], "tools": tools,
            "stream": stream}  # fmt: skip
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sut.url}/v1/chat/completions", json=body) as resp:
            return resp.status, dict(resp.headers), await resp.read()


def violations(sut: ContractSidecar) -> dict[tuple[str, str, str], int]:
    return {
        (s["release"], s["tool"], kind): n
        for s in sut.metrics.contracts.stats()
        for kind, n in s["violations"].items()
    }


async def test_declared_tools_enforce_rewrite_report(sut: ContractSidecar) -> None:
    status, headers, raw = await chat(sut, "enf", [tool("search", OTHER_ARGS)], "hi")
    assert status == 400 and b"tool_schema_mismatch" in raw and b"search@1.0.0" in raw
    assert headers["X-Holdfast-Contract-Violation"] == "search@1.0.0 declared"

    status, headers, raw = await chat(sut, "rew", [tool("search", OTHER_ARGS)], "call:search")
    assert status == 200 and headers["X-Holdfast-Contract-Rewritten"] == "search@1.0.0"
    # the fake built its arguments from the schema it received: the pinned one
    assert b"query" in raw and "X-Holdfast-Contract-Violation" in headers

    status, headers, raw = await chat(sut, "rep", [tool("search", OTHER_ARGS)], "call:search")
    assert status == 200
    assert headers["X-Holdfast-Contract-Violation"] == "search@1.0.0 declared, search@1.0.0 call"

    status, headers, _ = await chat(sut, "enf", [tool("search", SEARCH_ARGS)], "call:search")
    assert status == 200 and "X-Holdfast-Contract-Violation" not in headers
    assert violations(sut) == {
        ("enf", "search", "declared"): 1,
        ("rew", "search", "declared"): 1,
        ("rep", "search", "declared"): 1,
        ("rep", "search", "call"): 1,
    }


async def test_declared_tool_worded_differently_is_not_a_mismatch(sut: ContractSidecar) -> None:
    """Descriptions are the agent's to word: only what the parameters accept must match."""
    worded = {**SEARCH_ARGS, "description": "Search our docs",
              "properties": {**SEARCH_ARGS["properties"],
                             "query": {"type": "string", "minLength": 1,
                                       "description": "what the user asked about"}}}  # fmt: skip
    for release in ("enf", "rew", "rep"):
        status, headers, raw = await chat(sut, release, [tool("search", worded)], "hi")
        assert status == 200, raw
        assert "X-Holdfast-Contract-Violation" not in headers
        assert "X-Holdfast-Contract-Rewritten" not in headers
    assert violations(sut) == {}


async def test_model_tool_call_violation_non_streaming(sut: ContractSidecar) -> None:
    status, headers, raw = await chat(sut, "enf", [tool("airport", CODE_ARGS)], "call:airport")
    assert status == 502 and b"tool_call_contract_violation" in raw and b"airport@1.0.0" in raw
    assert headers["X-Holdfast-Contract-Violation"] == "airport@1.0.0 call"
    assert headers["X-Holdfast-Release"] == "enf"


async def test_streamed_tool_call_is_held_then_replaced_by_an_error(sut: ContractSidecar) -> None:
    status, _, raw = await chat(sut, "enf", [tool("airport", CODE_ARGS)], "call:airport",
                                stream=True)  # fmt: skip
    events = sse_payloads(raw)
    assert status == 200
    assert events[-1]["error"]["code"] == "tool_call_contract_violation"
    # no fragment of the bad call reached the agent, and nothing followed the error
    assert not any("tool_calls" in str(e) for e in events[:-1])
    assert b"[DONE]" not in raw
    assert violations(sut)[("enf", "airport", "call")] == 1


async def test_streamed_valid_call_arrives_whole_and_reported_one_is_marked(
    sut: ContractSidecar,
) -> None:
    status, _, raw = await chat(sut, "enf", [tool("search", SEARCH_ARGS)], "call:search",
                                stream=True)  # fmt: skip
    events = sse_payloads(raw)
    fragments = [
        e["choices"][0]["delta"]["tool_calls"][0]["function"].get("arguments", "")
        for e in events
        if e.get("choices") and e["choices"][0]["delta"].get("tool_calls")
    ]
    assert status == 200 and len(fragments) > 2 and raw.endswith(b"data: [DONE]\n\n")
    assert '"query"' in "".join(fragments)
    status, _, raw = await chat(sut, "rep", [tool("airport", CODE_ARGS)], "call:airport",
                                stream=True)  # fmt: skip
    assert status == 200 and b": holdfast-contract-violation airport@1.0.0 call" in raw
    assert raw.endswith(b"data: [DONE]\n\n")
