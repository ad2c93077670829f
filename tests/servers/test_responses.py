"""OpenAI Responses through the real sidecar app and the real fake upstream, with the real client
libraries (openai, openai-agents, langchain-openai): plain and streamed answers, chains of
``previous_response_id`` that keep their release through a route change and are rebuilt after
an operator migration, stored-state endpoints, ids nobody issued, and every filter."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from holdfast.keyspace import Release
from holdfast.keyspace.contract import Contract
from holdfast.keyspace.prompt import PromptVersion
from holdfast.store import Change
from holdfast_devtools import procs
from sidecar.budgets.ledger import Ledger
from tests.servers import conftest
from tests.servers import test_budget_filter as budget_tests
from tests.servers.conftest import AGENT, KS, SidecarUnderTest
from tests.servers.test_budget_filter import budgeted  # noqa: F401 - the fixture, by name

TOOLS: list[Any] = [
    {
        "type": "function",
        "name": "lookup",
        "description": "look an order up",
        "parameters": {
            "type": "object",
            "properties": {"order": {"type": "string"}},
            "required": ["order"],
        },
    }
]


def client(sut: SidecarUnderTest, **headers: str) -> AsyncOpenAI:
    return AsyncOpenAI(
        base_url=f"{sut.url}/v1", api_key="agent-own-key", default_headers=headers, max_retries=0
    )


async def fake_requests(fakellm: procs.ManagedProcess, limit: int = 1000) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fakellm.url}/_control/requests?limit={limit}") as resp:
            body = await resp.json()
    rows: list[dict[str, Any]] = body["requests"]
    return rows


def responses_bodies(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["body"] for r in rows if r["method"] == "POST" and r["path"] == "/v1/responses"]


async def test_plain_and_streamed(sidecar: SidecarUnderTest) -> None:
    c = client(sidecar)
    raw = await c.responses.with_raw_response.create(
        model="support", input="What are your opening hours?", instructions="Be brief."
    )
    answer = raw.parse()
    assert raw.headers["X-Holdfast-Release"] == "r1"
    assert answer.output_text.startswith("[model-one]")
    assert answer.usage is not None and answer.usage.output_tokens == 12
    seen: list[str] = []
    async with c.responses.stream(model="support", input="And on Sundays?") as stream:
        async for event in stream:
            seen.append(event.type)
        final = await stream.get_final_response()
    assert final.output_text.startswith("[model-one]")
    # every event of the grammar is relayed, in order, as it came
    assert seen[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert seen.count("response.output_text.delta") == 12
    assert seen[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]


async def test_a_chain_keeps_its_release_through_a_route_change(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    c = client(sidecar)
    first = await c.responses.create(model="support", input="my order is late")
    sidecar.set_stable("r2", aliases=("helper",))  # operators move new sessions to r2
    raw = await c.responses.with_raw_response.create(
        model="support", input="it was 1234", previous_response_id=first.id
    )
    second = raw.parse()
    assert raw.headers["X-Holdfast-Release"] == "r1"
    assert second.output_text.startswith("[model-one]")
    # the provider got its own id back, and continued its own stored conversation
    body = responses_bodies(await fake_requests(fakellm, 1))[-1]
    assert body["previous_response_id"] == first.id and body["model"] == "model-one"
    assert second.usage is not None and first.usage is not None
    assert second.usage.input_tokens > first.usage.input_tokens
    # the chain's session is named after its first response, pinned at its second turn
    entry = sidecar.pins.get(first.id)
    assert entry is not None and entry.pin.release == "r1"
    # a new chain follows the route
    fresh = await c.responses.create(model="support", input="hello")
    assert fresh.output_text.startswith("[model-two]")


def migrate(sidecar: SidecarUnderTest, session: str, to: str) -> None:
    """What `holdfastctl pins migrate` does, as the watch would deliver it."""
    entry = sidecar.pins.get(session)
    assert entry is not None
    moved = entry.pin.migrated(to, actor="token:ops", now=entry.pin.pinned_at + 1)
    sidecar.revision += 1
    key = KS.pin(AGENT, session)
    sidecar.pins.apply_changes([Change("put", key, moved.encode(), sidecar.revision, 1, 2)])


async def test_a_migrated_chain_is_rebuilt_and_continues(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    c = client(sidecar)
    first = await c.responses.create(model="support", input="call:lookup order 7", tools=TOOLS)
    call = first.output[0]
    assert call.type == "function_call"
    second = await c.responses.create(
        model="support",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "shipped"}],
        tools=TOOLS,
    )
    assert second.output_text.startswith("[model-one]")  # given its tool's result: text
    migrate(sidecar, first.id, "r2")
    raw = await c.responses.with_raw_response.create(
        model="support", input="thanks, and the next one?", previous_response_id=second.id
    )
    third = raw.parse()
    assert raw.headers["X-Holdfast-Release"] == "r2"
    assert raw.headers["X-Holdfast-Migrated-From"] == "r1"
    assert third.output_text.startswith("[model-two]")
    body = responses_bodies(await fake_requests(fakellm, 3))[-1]
    assert "previous_response_id" not in body and body["model"] == "model-two"
    kinds = [(i.get("type"), i.get("role")) for i in body["input"]]
    # the whole conversation, outputs included, with no id of the old release's store
    assert kinds == [
        ("message", "user"),  # the first input, as the old release's store lists it
        ("function_call", None),
        ("function_call_output", None),
        ("message", "assistant"),
        (None, "user"),  # this turn's input, as the agent sent it
    ]
    assert all("id" not in i for i in body["input"])
    texts = json.dumps(body["input"])
    assert "call:lookup order 7" in texts and "shipped" in texts and second.output_text in texts
    # and the chain goes on natively at its new release
    raw = await c.responses.with_raw_response.create(
        model="support", input="ok", previous_response_id=third.id
    )
    assert raw.headers["X-Holdfast-Release"] == "r2"
    assert "X-Holdfast-Migrated-From" not in raw.headers
    body = responses_bodies(await fake_requests(fakellm, 1))[-1]
    assert body["previous_response_id"] == third.id


async def test_migration_that_cannot_be_rebuilt_is_a_409(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    c = client(sidecar)
    first = await c.responses.create(model="support", input="one")
    second = await c.responses.create(model="support", input="two", previous_response_id=first.id)
    # the provider no longer has it (deleted behind the sidecar's back: expired, say)
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": "Bearer sk-provider-canary-7f3a"}
        async with http.delete(f"{fakellm.url}/v1/responses/{second.id}", headers=headers) as r:
            assert r.status == 200
    migrate(sidecar, first.id, "r2")
    before = len(responses_bodies(await fake_requests(fakellm)))
    with pytest.raises(openai.ConflictError) as info:
        await c.responses.create(model="support", input="three", previous_response_id=second.id)
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "state_not_portable"
    assert body["param"] == "previous_response_id"
    assert len(responses_bodies(await fake_requests(fakellm))) == before  # never sent to r2


@pytest.mark.parametrize("foreign", ["resp_never_issued", "resp with spaces", "x" * 300])
async def test_ids_nobody_issued_are_404_and_go_nowhere(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess, foreign: str
) -> None:
    c = client(sidecar)
    before = len(await fake_requests(fakellm))
    with pytest.raises(openai.NotFoundError) as info:
        await c.responses.create(model="support", input="hi", previous_response_id=foreign)
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "response_not_found"
    assert set(body) == {"message", "type", "code", "param"}
    if " " not in foreign:
        with pytest.raises(openai.NotFoundError):
            await c.responses.retrieve(foreign)
    assert len(await fake_requests(fakellm)) == before


async def test_store_false_is_never_recorded(sidecar: SidecarUnderTest) -> None:
    c = client(sidecar)
    answer = await c.responses.create(model="support", input="hi", store=False)
    with pytest.raises(openai.NotFoundError) as info:
        await c.responses.create(model="support", input="more", previous_response_id=answer.id)
    assert "store: false" in str(info.value.body)


async def test_a_deleted_release_is_a_clear_409(sidecar: SidecarUnderTest) -> None:
    c = client(sidecar)
    first = await c.responses.create(model="support", input="hi")
    sidecar.set_stable("r2")
    sidecar.revision += 1
    sidecar.config.apply_changes(
        sidecar.revision, [Change("delete", KS.release(AGENT, "r1"), b"", sidecar.revision)]
    )
    with pytest.raises(openai.ConflictError) as info:
        await c.responses.create(model="support", input="more", previous_response_id=first.id)
    body = info.value.body
    assert isinstance(body, dict) and body["code"] == "state_release_gone"
    assert "'r1'" in body["message"]


async def test_stored_state_endpoints_go_to_the_issuing_release(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    c = client(sidecar)
    first = await c.responses.create(model="support", input="first words")
    second = await c.responses.create(
        model="support", input="second words", previous_response_id=first.id
    )
    sidecar.set_stable("r2")
    got = await c.responses.retrieve(second.id)
    assert got.id == second.id and got.output_text == second.output_text
    items = await c.responses.input_items.list(second.id, order="asc")
    assert [i.type for i in items.data] == ["message", "message", "message"]
    with pytest.raises(openai.BadRequestError):  # the provider's own answer, relayed
        await c.responses.cancel(second.id)
    rows = await fake_requests(fakellm, 4)
    assert {r["headers"]["authorization"] for r in rows} == {"Bearer sk-provider-canary-7f3a"}
    await c.responses.delete(second.id)
    with pytest.raises(openai.NotFoundError) as info:
        await c.responses.retrieve(second.id)
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "response_not_found"


async def test_bad_responses_bodies_are_refused_at_the_door(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    before = len(await fake_requests(fakellm))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": "support"}, "input"),
        ({"model": "support", "input": 7}, "input"),
        ({"model": "support", "input": ["x"]}, "input"),
        ({"model": "support", "input": "x", "instructions": ["x"]}, "instructions"),
        ({"model": "support", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "support", "input": "x", "store": "no"}, "store"),
        (
            {"model": "support", "input": "x", "previous_response_id": "a", "conversation": "b"},
            "previous_response_id",
        ),
    ]
    async with aiohttp.ClientSession() as http:
        for body, param in cases:
            async with http.post(f"{sidecar.url}/v1/responses", json=body) as resp:
                assert resp.status == 400, body
                error = (await resp.json())["error"]
                assert error["param"] == param and error["code"] == "invalid_request"
        async with http.post(
            f"{sidecar.url}/v1/embeddings", json={"model": "support", "input": []}
        ) as resp:
            assert resp.status == 400 and (await resp.json())["error"]["param"] == "input"
        async with http.post(
            f"{sidecar.url}/v1/responses",
            data=b'{"model": "support", "input": "' + b"x" * 70_000 + b'"}',
        ) as resp:
            assert resp.status == 413
    assert len(await fake_requests(fakellm)) == before


async def test_models_retrieve(sidecar: SidecarUnderTest) -> None:
    c = client(sidecar)
    model = await c.models.retrieve("support")
    assert model.id == "support"
    assert (await c.models.retrieve("helper")).id == "helper"
    with pytest.raises(openai.NotFoundError) as info:
        await c.models.retrieve("gpt-4o")
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "model_not_found"


async def test_embeddings_keep_the_sessions_vector_space_through_a_rollout(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    sidecar.add_release("e1", "model-one", embedding_model="embed-a", index_version="v1")
    sidecar.add_release("e2", "model-two", embedding_model="embed-b", index_version="v2")
    sidecar.set_stable("e1")
    c = client(sidecar, **{"X-Holdfast-Session": "indexer-1"})
    raw = await c.embeddings.with_raw_response.create(model="support", input=["refund policy"])
    before = raw.parse().data[0].embedding
    assert raw.headers["X-Holdfast-Index-Version"] == "v1"
    sidecar.set_stable("e2")
    after = await c.embeddings.create(model="support", input=["refund policy"])
    assert after.data[0].embedding == before  # the same model: the same vector space
    models = [r["body"]["model"] for r in await fake_requests(fakellm, 2)]
    assert models == ["embed-a", "embed-a"]
    other = client(sidecar, **{"X-Holdfast-Session": "indexer-2"})
    raw = await other.embeddings.with_raw_response.create(model="support", input=["x"])
    assert raw.headers["X-Holdfast-Index-Version"] == "v2"
    # a release without an embedding model refuses, rather than embed with its chat model
    sidecar.set_stable("r1")
    with pytest.raises(openai.BadRequestError) as info:
        await client(sidecar, **{"X-Holdfast-Session": "s3"}).embeddings.create(
            model="support", input=["x"]
        )
    assert isinstance(info.value.body, dict)
    assert info.value.body["code"] == "embedding_model_missing"


async def test_prompts_in_instructions_and_contracts_on_function_calls(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    prompt = PromptVersion(name="greeter", version="1", text="You greet.", status="active")
    sidecar._put(KS.prompt("greeter", "1"), prompt.encode())
    args = {"type": "object", "properties": {"order": {"type": "integer"}}, "required": ["order"]}
    contract = Contract(tool="lookup", version="1.0.0", args_schema=args, result_schema={})
    sidecar._put(KS.contract("lookup", "1.0.0"), contract.encode())
    release = Release(agent=AGENT, name="r9", model="model-nine",
                      base_url=f"{sidecar.fake_url}/v1", api_key_env="TEST_PROVIDER_KEY",
                      prompts={"greeter": "active"}, contracts={"lookup": "1.0.0"},
                      contract_policy="report")  # fmt: skip
    sidecar._put(KS.release(AGENT, "r9"), release.encode())
    sidecar.set_stable("r9")
    c = client(sidecar)
    raw = await c.responses.with_raw_response.create(
        model="support", input="hello", instructions="@prompt:greeter"
    )
    assert raw.headers["X-Holdfast-Prompt-Version"] == "greeter@1"
    body = responses_bodies(await fake_requests(fakellm, 1))[-1]
    assert body["instructions"] == "You greet."
    # the declared tool differs from the pinned contract (string vs integer): reported
    raw = await c.responses.with_raw_response.create(
        model="support", input="call:lookup now", tools=TOOLS
    )
    assert "lookup" in raw.headers["X-Holdfast-Contract-Violation"]
    # streamed: the function call's argument deltas are assembled and checked
    text = b""
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sidecar.url}/v1/responses",
            json={"model": "support", "input": "call:lookup now", "tools": TOOLS, "stream": True},
        ) as resp:
            text = await resp.read()
    assert b": holdfast-contract-violation" in text and b"response.completed" in text


async def test_enforced_contract_ends_a_stream_with_an_error_event(
    sidecar: SidecarUnderTest,
) -> None:
    args = {"type": "object", "properties": {"order": {"type": "integer"}}, "required": ["order"]}
    contract = Contract(tool="lookup", version="1.0.0", args_schema=args, result_schema={})
    sidecar._put(KS.contract("lookup", "1.0.0"), contract.encode())
    release = Release(agent=AGENT, name="r8", model="model-eight",
                      base_url=f"{sidecar.fake_url}/v1", api_key_env="TEST_PROVIDER_KEY",
                      contracts={"lookup": "1.0.0"}, contract_policy="rewrite")  # fmt: skip
    sidecar._put(KS.release(AGENT, "r8"), release.encode())
    sidecar.set_stable("r8")
    c = client(sidecar)
    events: list[Any] = []
    stream: Any = await c.responses.create(
        model="support", input="call:lookup now", tools=TOOLS, stream=True
    )
    async for event in stream:
        events.append(event)
    # rewrite: the tool was declared with the pinned schema, so the call keeps its contract
    assert events[-1].type == "response.completed"
    calls = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert calls and isinstance(json.loads(calls[0].arguments)["order"], int)


async def test_a_provider_answering_in_another_dialect_is_relayed_untouched(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    chat = {"id": "x", "object": "chat.completion", "choices": [{"message": {"content": "hi"}}]}
    async with aiohttp.ClientSession() as http:
        await http.put(
            f"{fakellm.url}/_control/models/model-one", json={"raw_body": json.dumps(chat)}
        )
        try:
            async with http.post(
                f"{sidecar.url}/v1/responses", json={"model": "support", "input": "x"}
            ) as resp:
                assert resp.status == 200
                assert await resp.json() == chat
        finally:
            await http.put(f"{fakellm.url}/_control/models/model-one", json={"raw_body": ""})
    assert len(sidecar.states) == 0  # nothing issued, nothing recorded


async def test_openai_agents_sdk_function_tool_round_trip(sidecar: SidecarUnderTest) -> None:
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    looked_up: list[str] = []

    @function_tool
    def lookup(order: str) -> str:
        """Look an order up."""
        looked_up.append(order)
        return f"order {order} shipped"

    agent = Agent(
        name="support",
        instructions="Help with orders.",
        tools=[lookup],
        model=OpenAIResponsesModel(model="support", openai_client=client(sidecar)),
    )
    result = await Runner.run(agent, "call:lookup where is my order?")
    assert looked_up  # the model called the tool through the sidecar, the agent ran it
    assert str(result.final_output).startswith("[model-one]")


async def test_langchain_chat_openai_responses_api(sidecar: SidecarUnderTest) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model="support",
        base_url=f"{sidecar.url}/v1",
        api_key="agent-own-key",  # type: ignore[arg-type]
        use_responses_api=True,
        max_retries=0,
    )
    message = await llm.ainvoke("What are your opening hours?")
    assert "[model-one]" in str(message.content)
    chunks = [chunk async for chunk in llm.astream("And on Sundays?")]
    assert "[model-one]" in "".join(str(c.content) for c in chunks)


# -- budgets and shadow on the Responses dialect ---------------------------------------------

SESSION = budget_tests.SESSION


async def post_responses(sut: SidecarUnderTest, **body: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sut.url}/v1/responses",
            json={"model": AGENT, "input": "tell me about the weather", **body},
            headers={"X-Holdfast-Session": SESSION},
        ) as resp:
            assert resp.status == 200, await resp.text()
            answer: dict[str, Any] = await resp.json()
            return answer


async def test_budgets_reserve_write_the_cap_and_settle_on_usage(
    budgeted: tuple[SidecarUnderTest, Ledger],  # noqa: F811 - the imported fixture
    fakellm: procs.ManagedProcess,
) -> None:
    sut, ledger = budgeted
    budget_tests.put_budget(sut, tokens=100_000, request_cap=5)
    answer = await post_responses(sut)
    body = responses_bodies(await fake_requests(fakellm, 1))[-1]
    assert body["max_output_tokens"] == 5  # the cap the budget reserved, in the agent's field
    assert answer["status"] == "incomplete" and answer["usage"]["output_tokens"] == 5
    m = await budget_tests.settled(ledger)
    assert m.tally.spent == answer["usage"]["total_tokens"] and m.tally.estimated == 0
    # the agent's own cap is kept and reserved
    answer = await post_responses(sut, max_output_tokens=3)
    assert answer["usage"]["output_tokens"] == 3
    # streamed: settled from response.completed's usage
    spent = m.tally.spent
    usage: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sut.url}/v1/responses",
            json={"model": AGENT, "input": "weather", "stream": True},
            headers={"X-Holdfast-Session": SESSION},
        ) as resp:
            async for line in resp.content:
                if line.startswith(b"data: ") and b'"response.incomplete"' in line:
                    usage.append(json.loads(line[6:])["response"]["usage"])
    m = await budget_tests.settled(ledger)
    assert usage and m.tally.spent - spent == usage[0]["total_tokens"]


async def test_a_cut_stream_is_charged_what_was_produced(
    budgeted: tuple[SidecarUnderTest, Ledger],  # noqa: F811 - the imported fixture
) -> None:
    sut, ledger = budgeted
    budget_tests.put_budget(sut, tokens=100_000, request_cap=64)
    await budget_tests.fake(
        sut, "PUT", "/_control/models/model-one",
        {"token_interval_ms": 20, "completion_tokens": 40},
    )  # fmt: skip
    deltas = 0
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sut.url}/v1/responses",
            json={"model": AGENT, "input": "weather", "stream": True},
            headers={"X-Holdfast-Session": SESSION},
        ) as resp:
            async for line in resp.content:
                deltas += line.startswith(b"data: ") and b"output_text.delta" in line
                if deltas >= 3:
                    break
    m = await budget_tests.settled(ledger)
    produced = m.tally.spent
    assert m.tally.estimated == produced > 0  # no usage came: all of it estimated
    # the prompt estimate plus what the provider had produced: more than relayed, far below 40
    request_estimate = len(json.dumps([None, "weather", None], separators=(",", ":")))
    assert 3 <= produced - request_estimate < 40


async def test_shadow_compares_first_turns_and_leaves_no_state_behind(
    fakellm: procs.ManagedProcess,
) -> None:
    from holdfast.keyspace import Route, Shadow

    sut = await conftest.start_sidecar(fakellm.url)
    try:
        sut.add_release("r1", "model-one")
        sut.add_release("r2", "model-two")
        route = Route(
            agent=AGENT, stable="r1", shadow=Shadow(release="r2", percent=100.0, since=1.0)
        )
        sut._put(KS.route(AGENT), route.encode())
        c = client(sut)
        first = await c.responses.create(model="support", input="hello")
        await c.responses.create(model="support", input="more", previous_response_id=first.id)
        for _ in range(200):
            shadowed = [
                b for b in responses_bodies(await fake_requests(fakellm, 10))
                if b["model"] == "model-two"
            ]  # fmt: skip
            if shadowed:
                break
            await asyncio.sleep(0.01)
        assert len(shadowed) == 1  # the first turn only: the shadow does not hold the chain
        assert shadowed[0]["store"] is False and "previous_response_id" not in shadowed[0]
        assert all(s.owner.release == "r1" for _, s in sut.states.entries())
    finally:
        await sut.server.close()
