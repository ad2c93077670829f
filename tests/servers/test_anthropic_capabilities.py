"""Every capability on the Anthropic Messages dialect, through the real sidecar app and the real
fake upstream: budgets (reserved from ``max_tokens``, settled from ``message_start`` and
``message_delta`` usage, cut streams), tool contracts (``tool_use`` blocks and streamed
``input_json_delta``), managed prompts in ``system``, shadow traffic (like with like) and
health signals."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import pytest

from holdfast.keyspace import Release, Route, Shadow
from holdfast.keyspace.prompt import PromptVersion
from holdfast_devtools import procs
from sidecar.budgets.ledger import Ledger
from sidecar.http.app import SHADOW_KEY
from sidecar.shadow.runner import ShadowRunner
from tests.servers.conftest import AGENT, KEY_VAR, KS, SidecarUnderTest, start_sidecar
from tests.servers.contract_stack import SEARCH_ARGS, SEARCH_V1, contract_sidecar
from tests.servers.test_budget_filter import SESSION, put_budget, settled, start_budgeted

USER = {"role": "user", "content": "tell me about the weather"}
VERSION = {"anthropic-version": "2023-06-01"}


async def messages(
    url: str, body: dict[str, Any], *, session: str | None = SESSION, cut_after: int | None = None
) -> tuple[int, dict[str, str], bytes]:
    """POST /v1/messages; with ``cut_after``, hang up after that many text deltas."""
    headers = {**VERSION, **({"X-Holdfast-Session": session} if session else {})}
    payload = {"model": AGENT, "max_tokens": 64, "messages": [USER], **body}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{url}/v1/messages", json=payload, headers=headers) as resp:
            if cut_after is None:
                return resp.status, dict(resp.headers), await resp.read()
            seen = b""
            async for chunk in resp.content.iter_any():
                seen += chunk
                if seen.count(b'"text_delta"') >= cut_after:
                    break
            resp.close()
            return resp.status, dict(resp.headers), seen


def events(raw: bytes) -> list[dict[str, Any]]:
    return [
        json.loads(line[6:])
        for line in raw.split(b"\n")
        if line.startswith(b"data: {")
    ]  # fmt: skip


# -- budgets -----------------------------------------------------------------------------------


@pytest.fixture
async def budgeted(fakellm: procs.ManagedProcess) -> AsyncIterator[tuple[SidecarUnderTest, Ledger]]:
    sut, ledger = await start_budgeted(fakellm)
    sut.add_release("a1", "claude-one", provider="anthropic")
    sut.set_stable("a1")
    yield sut, ledger
    await sut.server.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_budget_reserves_max_tokens_and_settles_on_reported_usage(
    budgeted: tuple[SidecarUnderTest, Ledger], stream: bool
) -> None:
    sut, ledger = budgeted
    put_budget(sut, tokens=100_000)
    status, _, raw = await messages(sut.url, {"stream": stream, "max_tokens": 40})
    assert status == 200, raw
    usage = events(raw)[0]["message"]["usage"] if stream else json.loads(raw)["usage"]
    m = await settled(ledger)
    assert usage["input_tokens"] > 0
    assert m.tally.spent == usage["input_tokens"] + 12 and m.tally.estimated == 0


async def test_budget_refusal_speaks_anthropic_and_a_cut_stream_pays_what_it_got(
    budgeted: tuple[SidecarUnderTest, Ledger], fakellm: procs.ManagedProcess
) -> None:
    sut, ledger = budgeted
    put_budget(sut, tokens=100_000)
    async with aiohttp.ClientSession() as http:
        await http.put(
            f"{fakellm.url}/_control/models/claude-one",
            json={"completion_tokens": 400, "token_interval_ms": 5},
        )
    status, _, raw = await messages(sut.url, {"stream": True, "max_tokens": 1000}, cut_after=5)
    assert status == 200
    prompt = events(raw)[0]["message"]["usage"]["input_tokens"]
    m = await settled(ledger)
    # the prompt as message_start reported it, the output as streamed (never message_delta's)
    assert prompt < m.tally.spent < prompt + 60
    put_budget(sut, tokens=m.tally.spent + 50)
    status, headers, raw = await messages(sut.url, {"max_tokens": 1000})
    assert status == 429 and headers["Retry-After"]
    body = json.loads(raw)
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert body["error"]["code"] == "budget_exhausted"


async def test_budget_degrades_only_to_a_release_of_the_same_provider(
    budgeted: tuple[SidecarUnderTest, Ledger],
) -> None:
    sut, ledger = budgeted
    sut.add_release("a2", "claude-two", provider="anthropic")
    assert not ledger.meters  # nothing metered before the budget below
    put_budget(sut, tokens=50, action="degrade", degrade_to="r2")  # r2 is an openai release
    status, _, raw = await messages(sut.url, {"max_tokens": 10})
    assert status == 429 and json.loads(raw)["error"]["code"] == "budget_exhausted"
    put_budget(sut, tokens=50, action="degrade", degrade_to="a2")
    status, headers, raw = await messages(sut.url, {"max_tokens": 10})
    assert status == 200 and headers["X-Holdfast-Release"] == "a2"
    assert json.loads(raw)["model"] == "claude-two"
    assert headers["X-Holdfast-Budget-Degraded"] == f"session:{SESSION}"


# -- tool contracts ----------------------------------------------------------------------------

CODE_ARGS: dict[str, Any] = {
    "type": "object",
    "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
    "required": ["code"],
}


def tool(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "description": name, "input_schema": schema}


async def test_tool_contracts_on_tool_use_blocks(fakellm: procs.ManagedProcess) -> None:
    async with contract_sidecar(fakellm.url) as sut:
        sut.contract("1.0.0", SEARCH_V1)
        sut.contract("1.0.0", {"type": "object"}, tool="airport", args=CODE_ARGS)
        sut.release("enf", {"search": "1.0.0", "airport": "1.0.0"}, "enforce", "anthropic")
        sut.stable("enf")
        other = {"type": "object", "properties": {"q": {"type": "integer"}}}
        # a declared tool that differs from its pinned contract
        status, headers, raw = await messages(
            sut.url, {"tools": [tool("search", other)]}, session=None
        )
        assert status == 400 and json.loads(raw)["error"]["code"] == "tool_schema_mismatch"
        assert json.loads(raw)["error"]["param"] == "tools"
        # a model call that breaks it, whole
        body = {"tools": [tool("airport", CODE_ARGS)], "messages": [
            {"role": "user", "content": "call:airport"}]}  # fmt: skip
        status, headers, raw = await messages(sut.url, body, session=None)
        error = json.loads(raw)["error"]
        assert status == 502 and error["code"] == "tool_call_contract_violation"
        assert error["type"] == "api_error"
        assert headers["X-Holdfast-Contract-Violation"] == "airport@1.0.0 call"
        # streamed: held from the block's start until it is checked, then an error event
        status, _, raw = await messages(sut.url, {**body, "stream": True}, session=None)
        got = events(raw)
        assert status == 200 and got[-1]["type"] == "error"
        assert got[-1]["error"]["code"] == "tool_call_contract_violation"
        assert raw.rstrip().rsplit(b"\n\n", 1)[-1].startswith(b"event: error\n")
        assert not any(e["type"] in ("content_block_start", "content_block_delta") for e in got)
        # a valid call streams whole
        good = {"tools": [tool("search", SEARCH_ARGS)], "stream": True, "messages": [
            {"role": "user", "content": "call:search"}]}  # fmt: skip
        status, _, raw = await messages(sut.url, good, session=None)
        got = events(raw)
        parts = [e["delta"]["partial_json"] for e in got if e["type"] == "content_block_delta"]
        assert got[-1]["type"] == "message_stop" and len(parts) > 2
        assert "query" in json.loads("".join(parts))


# -- managed prompts ---------------------------------------------------------------------------


async def test_prompt_reference_in_system_string_and_blocks(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    text = "You are the support agent of {{shop}}."
    prompt = PromptVersion(name="support", version="1", text=text, status="active")
    sidecar._put(KS.prompt("support", "1"), prompt.encode())
    release = Release(
        agent=AGENT,
        name="ap",
        model="claude-one",
        base_url=f"{sidecar.fake_url}/v1",
        api_key_env=KEY_VAR,
        provider="anthropic",
        prompts={"support": "active"},
    )
    sidecar._put(KS.release(AGENT, "ap"), release.encode())
    sidecar.set_stable("ap")
    client = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key="x", max_retries=0)
    try:
        raw = await client.messages.with_raw_response.create(
            model=AGENT,
            max_tokens=8,
            system="@prompt:support",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"holdfast_prompt_vars": {"shop": "Acme"}},
        )
        assert raw.headers["x-holdfast-prompt-version"] == "support@1"
        cached = {"type": "ephemeral"}
        blocks = [{"type": "text", "text": "@prompt:support", "cache_control": cached},
                  {"type": "text", "text": "Answer in French."}]  # fmt: skip
        await client.messages.create(
            model=AGENT,
            max_tokens=8,
            system=blocks,  # type: ignore[arg-type]
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"X-Holdfast-Prompt-Vars": '{"shop": "Bolt"}'},
        )
    finally:
        await client.close()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fakellm.url}/_control/requests?limit=2") as resp:
            first, second = (r["body"] for r in (await resp.json())["requests"])
    assert first["system"] == "You are the support agent of Acme."
    assert "holdfast_prompt_vars" not in first
    assert second["system"] == [
        {"type": "text", "text": "You are the support agent of Bolt.",
         "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Answer in French."},
    ]  # fmt: skip


# -- shadow and signals ------------------------------------------------------------------------


def runner(sut: SidecarUnderTest) -> ShadowRunner:
    return sut.server.app[SHADOW_KEY]


async def test_shadow_compares_like_with_like_and_signals_count_tokens(
    fakellm: procs.ManagedProcess,
) -> None:
    async with aiohttp.ClientSession() as http:
        await http.post(f"{fakellm.url}/_control/reset")
    sut = await start_sidecar(fakellm.url)
    try:
        sut.add_release("a1", "claude-one", provider="anthropic")
        sut.add_release("a2", "claude-two", provider="anthropic")
        sut.add_release("o1", "model-one")
        shadow = Shadow(release="o1", percent=100.0, since=1.0)
        sut._put(KS.route(AGENT), Route(agent=AGENT, stable="a1", shadow=shadow).encode())
        status, _, _ = await messages(sut.url, {})
        assert status == 200
        assert runner(sut).stats() == ()  # an openai shadow is never sent a Messages request
        shadow = Shadow(release="a2", percent=100.0, since=2.0)
        sut._put(KS.route(AGENT), Route(agent=AGENT, stable="a1", shadow=shadow).encode())
        for stream in (False, True):
            status, _, _ = await messages(sut.url, {"stream": stream}, session=f"s-{stream}")
            assert status == 200
        deadline = time.monotonic() + 5
        while not (stats := runner(sut).stats()) or stats[0].samples < 2:
            assert time.monotonic() < deadline, stats
            await asyncio.sleep(0.02)
        assert stats[0].shadow == "a2" and stats[0].shadow_errors == 0
        assert stats[0].token_samples == 2  # both sides reported usage, streamed or not
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{fakellm.url}/_control/requests?limit=20") as resp:
                rows = (await resp.json())["requests"]
            async with http.get(f"{sut.url}/status") as resp:
                signals = (await resp.json())["signals"]["releases"]["a1"]
        shadowed = [r for r in rows if r["model"] == "claude-two"]
        assert len(shadowed) == 2 and all(r["path"] == "/v1/messages" for r in shadowed)
        assert all(r["headers"]["x-api-key"] and r["body"]["stream"] is False for r in shadowed)
        assert signals["requests"] == 3 and signals["tokens_out"] == 3 * 12
        assert signals["tokens_estimated_answers"] == 0 and signals["ttft_p95_ms"] is not None
    finally:
        await sut.server.close()


# -- configsvc's calls to an anthropic release: the switch's probe and prompt evaluation -------


async def test_probe_and_evaluation_speak_the_releases_api(fakellm: procs.ManagedProcess) -> None:
    from configsvc.errors import ProbeFailed
    from configsvc.prompts.cases import parse_cases
    from configsvc.prompts.eval import Evaluator
    from configsvc.releases import Prober
    from tests.servers.conftest import PROVIDER_KEY

    async with aiohttp.ClientSession() as http:
        await http.post(f"{fakellm.url}/_control/reset")
    environ = {KEY_VAR: PROVIDER_KEY}
    prober = Prober(timeout=5.0, prompt="ping", environ=environ)
    evaluator = Evaluator(environ=environ)
    await prober.start()
    await evaluator.start()
    release = Release(
        agent=AGENT, name="a1", model="claude-one", base_url=f"{fakellm.url}/v1",
        api_key_env=KEY_VAR, provider="anthropic", api_version="2023-06-01",
    )  # fmt: skip
    try:
        assert (await prober.probe(release))["status"] == "ok"
        prompt = PromptVersion(name="p", version="1", text="be brief", status="active")
        cases = parse_cases([{"id": "c1", "input": "hi", "expect": {"contains": ["claude-one"]}}])
        evaluation = await evaluator.run(prompt, cases, release, actor="t", now=1.0)
        assert evaluation.passed == 1 and evaluation.total == 1
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{fakellm.url}/_control/requests?limit=2") as resp:
                rows = (await resp.json())["requests"]
            assert all(r["path"] == "/v1/messages" for r in rows)
            assert rows[-1]["body"]["system"] == "be brief"
            assert rows[-1]["headers"]["x-api-key"] == PROVIDER_KEY
            openai_answer = '{"choices": [{"message": {"content": "hi"}}]}'
            await http.put(
                f"{fakellm.url}/_control/models/claude-one", json={"raw_body": openai_answer}
            )
        with pytest.raises(ProbeFailed, match=r"not an answer of its API \(anthropic\.messages\)"):
            await prober.probe(release)
    finally:
        await prober.close()
        await evaluator.close()


async def test_count_tokens_counts_the_substituted_prompt(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    prompt = PromptVersion(name="support", version="1", text="Long " * 50, status="active")
    sidecar._put(KS.prompt("support", "1"), prompt.encode())
    release = Release(
        agent=AGENT, name="ap", model="claude-one", base_url=f"{sidecar.fake_url}/v1",
        api_key_env=KEY_VAR, provider="anthropic", prompts={"support": "active"},
    )  # fmt: skip
    sidecar._put(KS.release(AGENT, "ap"), release.encode())
    sidecar.set_stable("ap")
    client = anthropic.AsyncAnthropic(base_url=sidecar.url, api_key="x", max_retries=0)
    try:
        counted = await client.messages.count_tokens(
            model=AGENT, system="@prompt:support", messages=[{"role": "user", "content": "hi"}]
        )
    finally:
        await client.close()
    assert counted.input_tokens > 50  # the prompt's text, not the reference
