"""Releases whose provider speaks another API than the agent, through the real sidecar app and the
real fake upstream (serving chat completions, Responses and Messages), with the real client
libraries as agents: the openai SDK (chat, streamed, parallel tools; Responses) in front of an
Anthropic release, the anthropic SDK (whole and streamed, tools) in front of an OpenAI one, each
holding a multi-turn, tool-using conversation; refusals and provider errors in the agent's own
shape; budgets settled on the provider's usage, contracts checking translated calls, prompts,
shadow and the traffic each sidecar counts."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
from anthropic.types import MessageParam, ToolParam
from openai import AsyncOpenAI

from holdfast.keyspace import Release, Route, Shadow
from holdfast.keyspace.prompt import PromptVersion
from holdfast.store import Change
from holdfast_devtools import procs
from tests.servers import test_budget_filter as budget_tests
from tests.servers import test_budget_queue as queue_tests
from tests.servers.conftest import AGENT, KEY_VAR, KS, SidecarUnderTest, start_sidecar
from tests.servers.contract_stack import SEARCH_ARGS, SEARCH_V1, contract_sidecar
from tests.servers.test_anthropic_capabilities import CODE_ARGS, runner, shadow_stats

WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
CLOCK: dict[str, Any] = {
    "type": "object",
    "properties": {"zone": {"type": "string"}},
    "required": ["zone"],
}
CHAT_TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time", "parameters": CLOCK}},
]
ANTHROPIC_TOOLS: list[ToolParam] = [
    {"name": "get_weather", "description": "weather of a city", "input_schema": WEATHER},
    {"name": "get_time", "description": "time in a zone", "input_schema": CLOCK},
]
RESPONSES_TOOLS: list[Any] = [
    {"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": False},
]


async def control(fakellm: procs.ManagedProcess, model: str, **fields: Any) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{fakellm.url}/_control/models/{model}", json=fields) as resp:
            assert resp.status == 200, await resp.text()


async def received(fakellm: procs.ManagedProcess, limit: int = 50) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fakellm.url}/_control/requests?limit={limit}") as resp:
            rows: list[dict[str, Any]] = (await resp.json())["requests"]
    return rows


@pytest.fixture
async def sut(fakellm: procs.ManagedProcess) -> AsyncIterator[SidecarUnderTest]:
    async with aiohttp.ClientSession() as http:
        await http.post(f"{fakellm.url}/_control/reset")
    for model in ("claude-one", "model-one", "model-chat"):
        await control(fakellm, model, parallel_tool_calls=True, cached_tokens=4)
    sidecar = await start_sidecar(fakellm.url)
    sidecar.add_release("a1", "claude-one", provider="anthropic")
    sidecar.add_release("o1", "model-one")
    sidecar.add_release("c1", "model-chat", provider="openai-chat")
    sidecar.set_stable("a1")
    yield sidecar
    await sidecar.server.close()


_CLIENTS: list[Any] = []


def openai_client(sut: SidecarUnderTest, session: str) -> AsyncOpenAI:
    made = AsyncOpenAI(
        base_url=f"{sut.url}/v1",
        api_key="agent-own-key",
        max_retries=0,
        default_headers={"X-Holdfast-Session": session},
    )
    _CLIENTS.append(made)
    return made


def anthropic_client(sut: SidecarUnderTest, session: str) -> anthropic.AsyncAnthropic:
    made = anthropic.AsyncAnthropic(
        base_url=sut.url,
        api_key="agent-own-key",
        max_retries=0,
        default_headers={"X-Claude-Code-Session-Id": session},
    )
    _CLIENTS.append(made)
    return made


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _CLIENTS:
        await _CLIENTS.pop().close()


def weather_result(call_id: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": '{"sky": "clear"}'}


# -- the openai SDK in front of an Anthropic release -------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_chat_agent_holds_a_tool_conversation_with_an_anthropic_release(
    sut: SidecarUnderTest, fakellm: procs.ManagedProcess, stream: bool
) -> None:
    c = openai_client(sut, f"chat-{stream}")
    history: list[Any] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "call:get_weather and call:get_time for Lyon"},
    ]

    async def turn() -> Any:
        if not stream:
            raw = await c.chat.completions.with_raw_response.create(
                model=AGENT, messages=history, tools=CHAT_TOOLS
            )
            assert raw.headers["x-holdfast-translated"] == "openai.chat->anthropic.messages"
            assert raw.headers["x-holdfast-release"] == "a1"
            return raw.parse()
        async with c.chat.completions.stream(
            model=AGENT,
            messages=history,
            tools=CHAT_TOOLS,
            stream_options={"include_usage": True},
        ) as events:
            async for _ in events:
                pass
            return await events.get_final_completion()

    first = await turn()
    calls = first.choices[0].message.tool_calls
    assert first.choices[0].finish_reason == "tool_calls"
    # parallel calls, numbered 0 and 1 whatever their content blocks were (Portkey #1275)
    assert [t.function.name for t in calls] == ["get_weather", "get_time"]
    assert json.loads(calls[0].function.arguments)["city"]
    assert json.loads(calls[1].function.arguments)["zone"]
    usage = first.usage
    assert usage is not None and usage.completion_tokens > 0  # LiteLLM #37264
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 4  # the provider's cache reads
    history.append(first.choices[0].message.model_dump(exclude_none=True))
    history += [weather_result(t.id) for t in calls]
    second = await turn()
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content.startswith("[claude-one]")
    history.append({"role": "assistant", "content": second.choices[0].message.content})
    history.append({"role": "user", "content": "thanks, and tomorrow?"})
    third = await turn()
    assert third.choices[0].message.content
    # what the provider was sent: Messages, the tool results of one turn in one user turn
    sent = [r for r in await received(fakellm) if r["path"] == "/v1/messages"][-3:]
    assert all(r["headers"]["x-api-key"] and r["headers"]["anthropic-version"] for r in sent)
    body = sent[1]["body"]
    assert body["system"] == "You are terse." and body["model"] == "claude-one"
    assert body["max_tokens"] == 8192  # Messages requires a cap; the agent sent none
    assistant, results = body["messages"][1], body["messages"][2]
    assert [b["type"] for b in assistant["content"]] == ["tool_use", "tool_use"]
    assert [b["type"] for b in results["content"]] == ["tool_result", "tool_result"]
    assert body.get("stream", False) is stream


async def test_openai_stream_without_include_usage_gets_no_usage_chunk(
    sut: SidecarUnderTest,
) -> None:
    c = openai_client(sut, "no-usage")
    chunks = [
        chunk
        async for chunk in await c.chat.completions.create(
            model=AGENT, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    ]
    assert all(chunk.usage is None for chunk in chunks)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.startswith("[claude-one]")


async def test_what_cannot_be_translated_is_refused_in_the_agents_shape(
    sut: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    before = len(await received(fakellm, 1000))
    c = openai_client(sut, "refused")
    with pytest.raises(openai.BadRequestError) as info:
        await c.chat.completions.create(
            model=AGENT, messages=[{"role": "user", "content": "hi"}], n=2
        )
    error = info.value.body
    assert isinstance(error, dict) and error["code"] == "untranslatable"
    assert error["param"] == "n" and "'a1'" in error["message"]
    a = anthropic_client(sut, "refused-claude")
    sut.set_stable("o1")
    thinking: list[MessageParam] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "hello"}]},
        {"role": "user", "content": "again"},
    ]  # fmt: skip
    with pytest.raises(anthropic.BadRequestError) as refused:
        await a.messages.create(model=AGENT, max_tokens=16, messages=thinking)
    body = refused.value.body
    assert isinstance(body, dict) and body["error"]["code"] == "untranslatable"
    assert body["error"]["param"] == "messages[1].content[0]"
    assert len(await received(fakellm, 1000)) == before  # nothing was forwarded


async def test_provider_errors_reach_the_agent_in_its_own_shape(
    sut: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    await control(fakellm, "claude-one", error_rate=1.0, error_status=429)
    with pytest.raises(openai.RateLimitError) as info:
        await openai_client(sut, "err").chat.completions.create(
            model=AGENT, messages=[{"role": "user", "content": "hi"}]
        )
    body = info.value.body
    assert isinstance(body, dict) and body["message"] == "injected rate limit"
    assert info.value.response.headers["retry-after"] == "1"
    sut.set_stable("o1")
    await control(fakellm, "model-one", error_rate=1.0, error_status=503)
    with pytest.raises(anthropic.InternalServerError) as failed:
        await anthropic_client(sut, "err2").messages.create(
            model=AGENT, max_tokens=8, messages=[{"role": "user", "content": "hi"}]
        )
    error = failed.value.body
    assert isinstance(error, dict) and error["type"] == "error"
    assert error["error"]["message"] == "injected error 503"


# -- the anthropic SDK in front of an OpenAI release -------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_agent_holds_a_tool_conversation_with_an_openai_release(
    sut: SidecarUnderTest, fakellm: procs.ManagedProcess, stream: bool
) -> None:
    sut.set_stable("o1")
    a = anthropic_client(sut, f"claude-{stream}")
    history: list[MessageParam] = [
        {"role": "user", "content": "call:get_weather and call:get_time for Lyon"}
    ]

    async def turn() -> Any:
        if not stream:
            raw = await a.messages.with_raw_response.create(
                model=AGENT, max_tokens=256, system="Be terse.", messages=history,
                tools=ANTHROPIC_TOOLS,
            )  # fmt: skip
            assert raw.headers["x-holdfast-translated"] == "anthropic.messages->openai.chat"
            return await raw.parse()
        async with a.messages.stream(
            model=AGENT, max_tokens=256, system="Be terse.", messages=history,
            tools=ANTHROPIC_TOOLS,
        ) as events:  # fmt: skip
            async for _ in events:
                pass
            return await events.get_final_message()

    first = await turn()
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert [u.name for u in uses] == ["get_weather", "get_time"]
    assert uses[0].input["city"] and uses[1].input["zone"]
    # the provider's usage, as Anthropic counts it: cache reads outside input_tokens
    assert first.usage.cache_read_input_tokens == 4 and first.usage.input_tokens > 0
    assert first.usage.output_tokens > 0
    history.append({"role": "assistant", "content": first.content})
    results: list[Any] = [
        {"type": "tool_result", "tool_use_id": u.id, "content": "clear"} for u in uses
    ]
    history.append({"role": "user", "content": results})
    second = await turn()
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text" and second.content[0].text.startswith("[model-one]")
    history.append({"role": "assistant", "content": second.content})
    history.append({"role": "user", "content": "and tomorrow?"})
    third = await turn()
    assert third.content[0].type == "text"
    sent = [r for r in await received(fakellm) if r["path"] == "/v1/chat/completions"][-3:]
    assert all(r["headers"]["authorization"].startswith("Bearer ") for r in sent)
    assert all("anthropic-version" not in r["headers"] for r in sent)
    messages = sent[1]["body"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "tool"]
    assert sent[1]["body"]["max_tokens"] == 256


async def test_anthropic_query_and_beta_header_stay_on_anthropics_side(
    sut: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    sut.set_stable("o1")
    beta = {"anthropic-beta": "fine-grained-tool-streaming-2025-05-14"}
    await anthropic_client(sut, "beta").messages.create(
        model=AGENT, max_tokens=8, messages=[{"role": "user", "content": "hi"}],
        extra_headers=beta, extra_query={"beta": "true"},
    )  # fmt: skip
    (sent,) = [r for r in await received(fakellm, 1)]
    assert sent["path"] == "/v1/chat/completions" and sent["query"] == ""
    assert "anthropic-beta" not in sent["headers"]


async def test_anthropic_max_tokens_stop_and_usage_of_a_streamed_answer(
    sut: SidecarUnderTest,
) -> None:
    sut.set_stable("o1")
    async with anthropic_client(sut, "capped").messages.stream(
        model=AGENT, max_tokens=3, messages=[{"role": "user", "content": "talk"}]
    ) as events:
        final = await events.get_final_message()
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 3


# -- Responses in front of an Anthropic release and a chat-completions-only one ---------------


@pytest.mark.parametrize("release", ["a1", "c1"])
async def test_responses_agent_stateless_tool_loop_through_a_translation(
    sut: SidecarUnderTest, fakellm: procs.ManagedProcess, release: str
) -> None:
    sut.set_stable(release)
    c = openai_client(sut, f"responses-{release}")
    items: list[Any] = [{"role": "user", "content": "call:get_weather for Lyon"}]
    async with c.responses.stream(
        model=AGENT, instructions="Be terse.", input=items, tools=RESPONSES_TOOLS, store=False
    ) as events:
        kinds = [event.type async for event in events]
        first = await events.get_final_response()
    # the event sequence strict clients (Codex CLI) need (LiteLLM #29254)
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert "response.function_call_arguments.done" in kinds
    assert "response.output_item.done" in kinds
    (call,) = [o for o in first.output if o.type == "function_call"]
    assert call.name == "get_weather" and json.loads(call.arguments)["city"]
    assert first.usage is not None and first.usage.output_tokens > 0
    assert first.to_dict()["store"] is False
    items += [
        {"type": "reasoning", "id": "rs_other", "summary": [], "encrypted_content": "gAAAA-x"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name,
         "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "clear"},
    ]  # fmt: skip
    second = await c.responses.create(
        model=AGENT, instructions="Be terse.", input=items, tools=RESPONSES_TOOLS, store=False
    )
    assert second.output_text and second.status == "completed"
    path = "/v1/messages" if release == "a1" else "/v1/chat/completions"
    last = [r for r in await received(fakellm) if r["path"] == path][-1]["body"]
    # the other provider's reasoning item is never sent to this one (LiteLLM #40364)
    assert "gAAAA" not in json.dumps(last) and "rs_other" not in json.dumps(last)
    # a continuation of provider-held state cannot reach a release that keeps none
    with pytest.raises(openai.NotFoundError):
        await c.responses.create(model=AGENT, input="more", previous_response_id=second.id)
    with pytest.raises(openai.BadRequestError) as info:
        await c.responses.create(model=AGENT, input="more", store=True)
    body = info.value.body
    assert isinstance(body, dict) and body["param"] == "store"


@pytest.mark.parametrize(
    ("release", "api"), [("a1", "responses"), ("c1", "responses"), ("a1", "chat")]
)
async def test_openai_agents_sdk_runs_a_tool_loop_through_a_translation(
    sut: SidecarUnderTest, fakellm: procs.ManagedProcess, release: str, api: str
) -> None:
    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)
    sut.set_stable(release)
    looked_up: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather of a city."""
        looked_up.append(city)
        return f"clear over {city}"

    c = openai_client(sut, f"agents-{release}-{api}")
    model = (
        OpenAIResponsesModel(model=AGENT, openai_client=c)
        if api == "responses"
        else OpenAIChatCompletionsModel(model=AGENT, openai_client=c)
    )
    agent = Agent(
        name="weather",
        instructions="Answer with the weather.",
        tools=[get_weather],
        model=model,
        model_settings=ModelSettings(store=False) if api == "responses" else ModelSettings(),
    )
    streamed = Runner.run_streamed(agent, "call:get_weather for Lyon")
    async for _ in streamed.stream_events():
        pass
    assert looked_up  # the model called the tool through the translation, the agent ran it
    provider = "claude-one" if release == "a1" else "model-chat"
    assert str(streamed.final_output).startswith(f"[{provider}]")
    path = "/v1/messages" if release == "a1" else "/v1/chat/completions"
    sent = [r for r in await received(fakellm) if r["path"] == path][-2:]
    assert len(sent) == 2 and all(r["body"]["stream"] is True for r in sent)


# -- pins and migration -------------------------------------------------------------------------


async def test_a_session_migrated_to_an_anthropic_release_continues_translated(
    sut: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    sut.set_stable("o1")
    c = openai_client(sut, "moving")
    history: list[Any] = [{"role": "user", "content": "call:get_weather in Lyon"}]
    first = await c.chat.completions.create(model=AGENT, messages=history, tools=CHAT_TOOLS)
    assert first.choices[0].finish_reason == "tool_calls"
    history.append(first.choices[0].message.model_dump(exclude_none=True))
    history += [weather_result(t.id) for t in first.choices[0].message.tool_calls or ()]
    migrate(sut, "moving", "a1")
    raw = await c.chat.completions.with_raw_response.create(
        model=AGENT, messages=history, tools=CHAT_TOOLS
    )
    assert raw.headers["x-holdfast-release"] == "a1"
    assert raw.headers["x-holdfast-migrated-from"] == "o1"
    assert raw.headers["x-holdfast-translated"] == "openai.chat->anthropic.messages"
    assert (raw.parse().choices[0].message.content or "").startswith("[claude-one]")
    sent = [r for r in await received(fakellm) if r["path"] == "/v1/messages"][-1]["body"]
    # the conversation the old release held, carried whole: the call and its result
    assert [b["type"] for b in sent["messages"][1]["content"]] == ["tool_use"]
    assert [b["type"] for b in sent["messages"][2]["content"]] == ["tool_result"]


async def test_a_responses_chain_migrated_to_a_translated_release_is_rebuilt_once(
    sut: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    sut.set_stable("o1")
    c = openai_client(sut, "chain")
    first = await c.responses.create(model=AGENT, input="call:get_weather", tools=RESPONSES_TOOLS)
    call = first.output[0]
    assert call.type == "function_call"
    second = await c.responses.create(
        model=AGENT,
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        tools=RESPONSES_TOOLS,
    )
    migrate(sut, "chain", "a1")
    raw = await c.responses.with_raw_response.create(
        model=AGENT, input="and tomorrow?", previous_response_id=second.id, tools=RESPONSES_TOOLS
    )
    assert raw.headers["x-holdfast-release"] == "a1"
    assert raw.headers["x-holdfast-migrated-from"] == "o1"
    third = raw.parse()
    assert third.output_text.startswith("[claude-one]") and third.to_dict()["store"] is False
    sent = [r for r in await received(fakellm) if r["path"] == "/v1/messages"][-1]["body"]
    texts = json.dumps(sent)
    # the rebuilt conversation, translated: the call, its result, the old answer, this turn
    assert "tool_use" in texts and "sunny" in texts and second.output_text in texts
    assert "and tomorrow?" in texts and "previous_response_id" not in texts
    # the translated release keeps no state: a continuation of its answer cannot be carried
    with pytest.raises(openai.ConflictError) as info:
        await c.responses.create(model=AGENT, input="more", previous_response_id=third.id)
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "state_not_portable"
    assert "translation" in body["message"]


def migrate(sut: SidecarUnderTest, session: str, to: str) -> None:
    """What `holdfastctl pins migrate` does, as the watch would deliver it."""
    entry = sut.pins.get(session)
    assert entry is not None
    moved = entry.pin.migrated(to, actor="token:ops", now=entry.pin.pinned_at + 1)
    sut.revision += 1
    key = KS.pin(AGENT, session)
    sut.pins.apply_changes([Change("put", key, moved.encode(), sut.revision, 1, 2)])


# -- every capability across a translated release ---------------------------------------------


async def test_budget_settles_on_the_providers_usage(fakellm: procs.ManagedProcess) -> None:
    sut, ledger = await budget_tests.start_budgeted(fakellm)
    try:
        sut.add_release("a1", "claude-one", provider="anthropic")
        sut.set_stable("a1")
        budget_tests.put_budget(sut, tokens=100_000)
        resp = await budget_tests.chat(sut, max_tokens=40)
        assert resp.status == 200
        m = await budget_tests.settled(ledger)
        reported = await resp.json()
        usage = reported["usage"]
        assert m.tally.estimated == 0
        assert m.tally.spent == usage["prompt_tokens"] + usage["completion_tokens"]
        lines = await budget_tests.stream_lines(sut)  # the agent did not ask for usage
        assert not any('"usage"' in line for line in lines)
        assert lines[-1] == "data: [DONE]"
    finally:
        await sut.server.close()


async def test_a_translated_request_waits_for_budget_and_its_fitted_cap_goes_translated(
    fakellm: procs.ManagedProcess,
) -> None:
    sut, ledger, queue = await queue_tests.start(fakellm)
    try:
        sut.add_release("a1", "claude-one", provider="anthropic")
        sut.set_stable("a1")
        budget_tests.put_budget(sut, tokens=queue_tests.WORST + 30)  # one worst case at a time
        await control(fakellm, "claude-one", latency_ms=400)
        first = asyncio.create_task(queue_tests.ask(sut))
        await queue_tests.until(lambda: queue_tests.in_flight(ledger), "first in flight")
        second = asyncio.create_task(queue_tests.ask(sut))
        await queue_tests.until(lambda: queue.waiting == 1, "second waiting")
        (s1, a1, _, t1), (s2, a2, h2, t2) = await asyncio.gather(first, second)
        assert (s1, s2) == (200, 200), (a1, a2)
        assert h2["X-Holdfast-Translated"] == "openai.chat->anthropic.messages"
        assert t2 > t1  # it went out once the first answer settled on Anthropic's usage
        m = await budget_tests.settled(ledger)
        assert m.tally.spent == a1["usage"]["total_tokens"] + a2["usage"]["total_tokens"]
        assert m.tally.waits == 1 and queue.waiting == 0
        # The cap lowered to what is left is written in the agent's API, then translated.
        await control(fakellm, "claude-one", latency_ms=0)
        budget_tests.put_budget(sut, tokens=1000, fit_cap=8)
        budget_tests.spend_to(m, 1000 - (queue_tests.PROMPT + 20))
        status, answer, headers, _ = await queue_tests.ask(sut, max_tokens=100)
        assert status == 200, answer
        assert headers["X-Holdfast-Budget-Fitted"] == "20"
        sent = [r for r in await received(fakellm) if r["path"] == "/v1/messages"][-1]
        assert sent["body"]["max_tokens"] == 20
        assert answer["usage"]["completion_tokens"] <= 20
    finally:
        await control(fakellm, "claude-one", latency_ms=0)
        await sut.server.close()


async def test_contracts_check_translated_calls(fakellm: procs.ManagedProcess) -> None:
    async with contract_sidecar(fakellm.url) as sut:
        sut.contract("1.0.0", SEARCH_V1)
        sut.release("enf", {"search": "1.0.0"}, "enforce", "anthropic")
        sut.stable("enf")
        tools = [{"type": "function", "function": {"name": "search", "parameters": SEARCH_ARGS}}]
        body = {"model": AGENT, "tools": tools, "stream": True,
                "messages": [{"role": "user", "content": "call:search"}]}  # fmt: skip
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{sut.url}/v1/chat/completions", json=body) as resp:
                raw = await resp.read()
        lines = [json.loads(line[6:]) for line in raw.decode().split("\n\n")
                 if line.startswith("data: {")]  # fmt: skip
        args = "".join(
            tc["function"].get("arguments", "")
            for ch in lines
            for choice in ch.get("choices", [])
            for tc in choice["delta"].get("tool_calls", [])
        )
        assert "query" in json.loads(args)  # a valid call passes whole
        sut.contract("1.0.0", {"type": "object"}, tool="airport", args=CODE_ARGS)
        sut.release("enf2", {"airport": "1.0.0"}, "enforce", "anthropic")
        sut.stable("enf2")
        body["tools"] = [{"type": "function", "function": {"name": "airport",
                                                           "parameters": CODE_ARGS}}]  # fmt: skip
        body["messages"] = [{"role": "user", "content": "call:airport"}]
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{sut.url}/v1/chat/completions", json=body) as resp:
                raw = await resp.read()
        last = json.loads(raw.decode().strip().split("\n\n")[-1][6:])
        assert last["error"]["code"] == "tool_call_contract_violation"  # in OpenAI's shape
        assert b'"tool_calls"' not in raw  # the call was held, never relayed unchecked


async def test_prompt_and_shadow_across_a_translation(
    sut: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    prompt = PromptVersion(name="support", version="1", text="You help {{shop}}.", status="active")
    sut._put(KS.prompt("support", "1"), prompt.encode())
    release = Release(
        agent=AGENT, name="ap", model="claude-one", base_url=f"{sut.fake_url}/v1",
        api_key_env=KEY_VAR, provider="anthropic", prompts={"support": "active"},
    )  # fmt: skip
    sut._put(KS.release(AGENT, "ap"), release.encode())
    shadow = Shadow(release="o1", percent=100.0, since=5.0)
    sut._put(KS.route(AGENT), Route(agent=AGENT, stable="ap", shadow=shadow).encode())
    c = openai_client(sut, "prompted")
    raw = await c.chat.completions.with_raw_response.create(
        model=AGENT,
        messages=[{"role": "system", "content": "@prompt:support"},
                  {"role": "user", "content": "hi"}],
        extra_body={"holdfast_prompt_vars": {"shop": "Acme"}},
    )  # fmt: skip
    assert raw.headers["x-holdfast-prompt-version"] == "support@1"
    sent = [r for r in await received(fakellm) if r["path"] == "/v1/messages"][-1]["body"]
    assert sent["system"] == "You help Acme." and "holdfast_prompt_vars" not in sent
    # the openai shadow (like the agent) and the translated primary meet as neutral answers
    (stats,) = await shadow_stats(sut, "o1", samples=1)
    assert stats.shadow_errors == 0 and stats.token_samples == 1
    # a shadow that cannot take a request is never sent it, and says so
    sut._put(KS.route(AGENT), Route(agent=AGENT, stable="o1", shadow=Shadow(
        release="a1", percent=100.0, since=6.0)).encode())  # fmt: skip
    await openai_client(sut, "a-new-session").chat.completions.create(
        model=AGENT, messages=[{"role": "user", "content": "hi"}], seed=7
    )
    (refused,) = await shadow_stats(sut, "a1", samples=1)
    assert refused.shadow_errors == 1 and refused.samples == 0
    assert runner(sut).stats()


async def test_traffic_counts_what_served_requests_use(fakellm: procs.ManagedProcess) -> None:
    traffic: Counter[str] = Counter()
    sut = await start_sidecar(fakellm.url, parts={"traffic": traffic})
    try:
        sut.add_release("a1", "claude-one", provider="anthropic")
        sut.add_release("o1", "model-one")
        sut.set_stable("a1")
        c = openai_client(sut, "traffic")
        await c.chat.completions.create(
            model=AGENT, messages=[{"role": "user", "content": "hi"}], tools=CHAT_TOOLS
        )
        sut.set_stable("o1")
        await c.chat.completions.create(model=AGENT, messages=[{"role": "user", "content": "x"}])
        body = {"model": AGENT, "n": 2, "messages": [{"role": "user", "content": "y"}]}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{sut.url}/v1/chat/completions", json=body) as resp:
                error = (await resp.json())["error"]
        assert error["code"] != "untranslatable"  # o1 speaks chat: n=2 is its own to judge
        with pytest.raises(openai.BadRequestError):  # refused before any release: not counted
            await c.chat.completions.create(model=AGENT, messages=[])
    finally:
        await sut.server.close()
    assert traffic["openai.chat"] == 3 and traffic["openai.chat:tools"] == 1
    assert traffic["openai.chat:n"] == 1 and set(traffic) == {
        "openai.chat", "openai.chat:tools", "openai.chat:n"}  # fmt: skip


# -- the switch's warm-up probe ---------------------------------------------------------------


async def test_probe_declares_a_tool_when_the_agents_traffic_does(
    fakellm: procs.ManagedProcess,
) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from configsvc.errors import ProbeFailed
    from configsvc.releases import Prober
    from tests.servers.conftest import PROVIDER_KEY

    async def no_tools(request: web.Request) -> web.Response:
        """An OpenAI-compatible server that cannot take tools (many small local ones)."""
        body = await request.json()
        if "tools" in body:
            error = {"message": "tools are not supported by this model", "type": "bad_request"}
            return web.json_response({"error": error}, status=400)
        answer = {"role": "assistant", "content": "pong"}
        return web.json_response({"choices": [{"index": 0, "message": answer}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", no_tools)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    environ = {KEY_VAR: PROVIDER_KEY}
    prober = Prober(timeout=5.0, prompt="ping", environ=environ)
    await prober.start()
    uses_tools = {"anthropic.messages": 20, "anthropic.messages:tools": 8}
    small = Release(agent=AGENT, name="s1", model="small", api_key_env=KEY_VAR,
                    base_url=str(server.make_url("/v1")), provider="openai-chat")  # fmt: skip
    fake = Release(agent=AGENT, name="o1", model="model-one", api_key_env=KEY_VAR,
                   base_url=f"{fakellm.url}/v1")  # fmt: skip
    try:
        assert (await prober.probe(small))["status"] == "ok"  # no tools asked: fine
        with pytest.raises(ProbeFailed, match="tools are not supported") as info:
            await prober.probe(small, uses_tools)
        assert "declared a tool, as this agent's requests do" in str(info.value)
        result = await prober.probe(fake, uses_tools)
        assert result["checked"] == ["tools"]
        assert result["translated"] == ["anthropic.messages->openai.chat"]
        sent = (await received(fakellm, 1))[-1]["body"]
        assert sent["tools"][0]["function"]["name"] == "holdfast_probe"
    finally:
        await prober.close()
        await server.close()
