"""Anthropic Messages through the real sidecar app and the real fake upstream, with the real
``anthropic`` SDK as the agent: plain, streamed, tools, count_tokens, the provider headers, the
session headers, errors in Anthropic's shape, and a provider that answers in another API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import pytest
from anthropic.types import MessageParam, ToolParam

from holdfast_devtools import procs
from tests.servers.conftest import AGENT, PROVIDER_KEY, SidecarUnderTest, start_sidecar

USER: MessageParam = {"role": "user", "content": "what is the weather in Lyon"}
WEATHER: ToolParam = {
    "name": "get_weather",
    "description": "Weather of a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city"],
    },
}


@pytest.fixture
async def sut(fakellm: procs.ManagedProcess) -> AsyncIterator[SidecarUnderTest]:
    async with aiohttp.ClientSession() as http:
        await http.post(f"{fakellm.url}/_control/reset")
    sidecar = await start_sidecar(fakellm.url)
    sidecar.add_release("a1", "claude-one", provider="anthropic")
    sidecar.add_release("a2", "claude-two", provider="anthropic", api_version="2024-01-01")
    sidecar.add_release("o1", "model-one")
    sidecar.set_stable("a1", aliases=("claude-sonnet-4-5",))
    yield sidecar
    await sidecar.server.close()


_CLIENTS: list[anthropic.AsyncAnthropic] = []


def client(sut: SidecarUnderTest, **headers: str) -> anthropic.AsyncAnthropic:
    """The agent: the anthropic SDK, with its own (dummy) key, pointed at the sidecar."""
    made = anthropic.AsyncAnthropic(
        base_url=sut.url, api_key="agent-own-key", max_retries=0, default_headers=headers
    )
    _CLIENTS.append(made)
    return made


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _CLIENTS:
        await _CLIENTS.pop().close()


async def seen(fakellm: procs.ManagedProcess, limit: int = 1) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fakellm.url}/_control/requests?limit={limit}") as resp:
            rows: list[dict[str, Any]] = (await resp.json())["requests"]
    return rows


async def fake_behaviour(fakellm: procs.ManagedProcess, model: str, **fields: Any) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{fakellm.url}/_control/models/{model}", json=fields) as resp:
            assert resp.status == 200, await resp.text()


async def post(
    sut: SidecarUnderTest, path: str, body: Any, **headers: str
) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http:
        data = body if isinstance(body, bytes) else None
        json_body = None if isinstance(body, bytes) else body
        async with http.post(
            f"{sut.url}{path}", data=data, json=json_body, headers=headers
        ) as resp:
            return resp.status, dict(resp.headers), await resp.read()


async def test_create_is_routed_stamped_and_keyed_the_anthropic_way(
    sut: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    raw = await client(sut).messages.with_raw_response.create(
        model="support", max_tokens=64, messages=[USER]
    )
    message = await raw.parse()
    assert raw.headers["x-holdfast-release"] == "a1"
    assert message.model == "claude-one" and message.stop_reason == "end_turn"
    assert message.content[0].type == "text" and "[claude-one]" in message.content[0].text
    assert message.usage.input_tokens > 0 and message.usage.output_tokens == 12
    (row,) = await seen(fakellm)
    headers = row["headers"]
    assert headers["x-api-key"] == PROVIDER_KEY and "authorization" not in headers
    assert headers["anthropic-version"]  # the SDK's own, passed on
    assert "agent-own-key" not in str(row)
    assert row["path"] == "/v1/messages" and row["body"]["model"] == "claude-one"


async def test_an_alias_names_the_route_like_claude_code_model_names(
    sut: SidecarUnderTest,
) -> None:
    message = await client(sut).messages.create(
        model="claude-sonnet-4-5", max_tokens=16, messages=[USER]
    )
    assert message.model == "claude-one"


async def test_stream_relays_the_event_grammar(sut: SidecarUnderTest) -> None:
    kinds: list[str] = []
    async with client(sut).messages.stream(
        model="support", max_tokens=64, messages=[USER]
    ) as stream:
        async for event in stream:
            kinds.append(event.type)
        final = await stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert {"content_block_start", "content_block_delta", "content_block_stop"} <= set(kinds)
    assert "message_delta" in kinds
    assert "[claude-one]" in final.content[0].text  # type: ignore[union-attr]
    assert final.usage.output_tokens == 12 and final.usage.input_tokens > 0


async def test_raw_stream_is_the_providers_bytes(sut: SidecarUnderTest) -> None:
    body = {"model": AGENT, "max_tokens": 8, "messages": [USER], "stream": True}
    status, headers, raw = await post(sut, "/v1/messages", body, **{"anthropic-version": "x"})
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    assert raw.startswith(b"event: message_start\ndata: ")
    assert b"event: ping\n" in raw and raw.endswith(b'event: message_stop\ndata: {"type": '
                                                    b'"message_stop"}\n\n')  # fmt: skip


async def test_tools_round_trip_ends_in_text(sut: SidecarUnderTest) -> None:
    c = client(sut)
    ask: MessageParam = {"role": "user", "content": "call:get_weather please"}
    first = await c.messages.create(model="support", max_tokens=64, messages=[ask], tools=[WEATHER])
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use" and call.name == "get_weather"
    assert isinstance(call.input, dict) and "city" in call.input
    result: MessageParam = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21C"}],
    }
    history: list[MessageParam] = [ask, {"role": "assistant", "content": first.content}, result]
    second = await c.messages.create(
        model="support", max_tokens=64, messages=history, tools=[WEATHER]
    )
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"
    # streamed: the tool_use block assembled from input_json_delta fragments
    async with c.messages.stream(
        model="support", max_tokens=64, messages=[ask], tools=[WEATHER]
    ) as stream:
        final = await stream.get_final_message()
    assert final.content[-1].type == "tool_use" and final.content[-1].input == call.input


async def test_count_tokens_goes_to_the_sessions_release(
    sut: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    counted = await client(sut).messages.count_tokens(
        model="support", messages=[USER], system="be brief"
    )
    assert counted.input_tokens > 0
    (row,) = await seen(fakellm)
    assert row["path"] == "/v1/messages/count_tokens" and row["body"]["model"] == "claude-one"
    assert "max_tokens" not in row["body"]


async def test_version_beta_and_query_reach_the_provider(
    sut: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    betas = "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"
    await client(sut).beta.messages.create(
        model="support",
        max_tokens=8,
        messages=[{"role": "user", "content": "hi"}],
        betas=betas.split(","),
    )
    (row,) = await seen(fakellm)
    assert row["headers"]["anthropic-beta"] == betas
    # Claude Code asks for POST /v1/messages?beta=true
    body = {"model": AGENT, "max_tokens": 8, "messages": [USER]}
    status, _, raw = await post(sut, "/v1/messages?beta=true", body)
    (row,) = await seen(fakellm)
    assert status == 200 and row["query"] == "beta=true", raw
    # the release's version applies only when the agent sends none
    sut.set_stable("a2")
    body = {"model": AGENT, "max_tokens": 8, "messages": [USER]}
    status, _, raw = await post(sut, "/v1/messages", body)
    assert status == 200, raw
    (row,) = await seen(fakellm)
    assert row["headers"]["anthropic-version"] == "2024-01-01"
    status, _, _ = await post(sut, "/v1/messages", body, **{"anthropic-version": "2023-06-01"})
    (row,) = await seen(fakellm)
    assert status == 200 and row["headers"]["anthropic-version"] == "2023-06-01"


@pytest.mark.parametrize(
    ("headers", "metadata", "session"),
    [
        ({"X-Claude-Code-Session-Id": "3f6b1c2e-9d1a-4d6e-8f00-1a2b3c4d5e6f"}, None,
         "3f6b1c2e-9d1a-4d6e-8f00-1a2b3c4d5e6f"),
        ({"X-Holdfast-Session": "ours", "X-Claude-Code-Session-Id": "theirs"}, None, "ours"),
        ({}, {"user_id": "user-42"}, "user-42"),
        ({}, {"user_id": "Ada Lovelace <ada@example.com>"}, "u-"),
    ],
)  # fmt: skip
async def test_session_from_headers_then_metadata_and_it_is_pinned(
    sut: SidecarUnderTest, headers: dict[str, str], metadata: Any, session: str
) -> None:
    extra: dict[str, Any] = {"metadata": metadata} if metadata else {}
    c = client(sut, **headers)
    await c.messages.create(model="support", max_tokens=8, messages=[USER], **extra)
    pinned = [s for s in [s for s, _ in sut.pins.entries()] if s.startswith(session)]
    assert len(pinned) == 1
    sut.set_stable("a2")  # a running conversation keeps its release
    raw = await c.messages.with_raw_response.create(
        model="support", max_tokens=8, messages=[USER], **extra
    )
    assert raw.headers["x-holdfast-release"] == "a1"
    other = await client(sut).messages.with_raw_response.create(
        model="support", max_tokens=8, messages=[USER]
    )
    assert other.headers["x-holdfast-release"] == "a2"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": AGENT, "messages": [USER]}, "max_tokens"),
        ({"model": AGENT, "max_tokens": 0, "messages": [USER]}, "max_tokens"),
        ({"model": AGENT, "max_tokens": 8, "messages": "hi"}, "messages"),
        ({"model": AGENT, "max_tokens": 8}, "messages"),
        ({"model": 7, "max_tokens": 8, "messages": [USER]}, "model"),
        ({"model": AGENT, "max_tokens": 8, "messages": [{"content": "x"}]}, "messages.0.role"),
        ({"model": AGENT, "max_tokens": 8, "messages": [{"role": "user", "content": 3}]},
         "messages.0.content"),
        ({"model": AGENT, "max_tokens": 8, "messages": [USER], "system": 3}, "system"),
        ({"model": AGENT, "max_tokens": 8, "messages": [USER], "stream": "yes"}, "stream"),
        ({"model": AGENT, "max_tokens": 8, "messages": [USER], "tools": [{}]}, "tools"),
    ],
)  # fmt: skip
async def test_bad_bodies_are_refused_in_anthropic_shape_before_forwarding(
    sut: SidecarUnderTest, fakellm: procs.ManagedProcess, body: dict[str, Any], param: str
) -> None:
    before = len(await seen(fakellm, 1000))
    status, _, raw = await post(sut, "/v1/messages", body)  # the SDK would refuse some itself
    assert status == 400
    error = anthropic_error(raw)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_request" and error["param"] == param
    assert len(await seen(fakellm, 1000)) == before


@pytest.mark.parametrize(
    ("raw", "status", "kind", "code"),
    [
        (b"{not json", 400, "invalid_request_error", "invalid_request"),
        (b"[]", 400, "invalid_request_error", "invalid_request"),
        (b'{"model": "nope", "max_tokens": 8, "messages": []}', 404, "not_found_error",
         "model_not_found"),
        (b'{"model": "support", "max_tokens": 8, "messages": [], "x": "' + b"a" * 70_000 + b'"}',
         413, "request_too_large", "request_too_large"),
    ],
)  # fmt: skip
async def test_errors_speak_anthropic(
    sut: SidecarUnderTest, raw: bytes, status: int, kind: str, code: str
) -> None:
    got, _, body = await post(sut, "/v1/messages", raw, **{"Content-Type": "application/json"})
    assert got == status
    error = anthropic_error(body)
    assert error["type"] == kind and error["code"] == code
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sut.url}/v1/messages") as resp:
            assert resp.status == 405
            assert anthropic_error(await resp.read())["type"] == "invalid_request_error"


def anthropic_error(raw: bytes) -> dict[str, Any]:
    body = json.loads(raw)
    assert body["type"] == "error" and set(body) == {"type", "error"}
    error: dict[str, Any] = body["error"]
    assert isinstance(error["message"], str) and error["message"]
    return error


async def test_a_release_of_another_provider_is_refused_naming_both(
    sut: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    sut.set_stable("o1")
    before = len(await seen(fakellm, 1000))
    c = client(sut, **{"X-Claude-Code-Session-Id": "s-mismatch"})
    with pytest.raises(anthropic.BadRequestError) as info:
        await c.messages.create(model="support", max_tokens=8, messages=[USER])
    error = info.value.body["error"]  # type: ignore[index]
    assert error["code"] == "dialect_not_served"
    assert "'o1'" in error["message"] and "openai" in error["message"]
    assert "anthropic" in error["message"]
    assert "s-mismatch" not in [
        s for s, _ in sut.pins.entries()
    ]  # never pinned to a release it cannot use
    # and the other way round: a chat request to an anthropic release, in OpenAI's shape
    sut.set_stable("a1")
    chat = {"model": AGENT, "messages": [{"role": "user", "content": "hi"}]}
    status, _, raw = await post(sut, "/v1/chat/completions", chat)
    assert status == 400 and b'"code":"dialect_not_served"' in raw and b'"error":{' in raw
    assert len(await seen(fakellm, 1000)) == before


async def test_a_provider_answering_another_api_is_a_502(
    sut: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    openai_answer = '{"id": "x", "object": "chat.completion", "choices": [{"message": ' \
                    '{"role": "assistant", "content": "hi"}}]}'  # fmt: skip
    await fake_behaviour(fakellm, "claude-one", raw_body=openai_answer)
    with pytest.raises(anthropic.InternalServerError) as info:
        await client(sut).messages.create(model="support", max_tokens=8, messages=[USER])
    assert info.value.status_code == 502
    error = info.value.body["error"]  # type: ignore[index]
    assert error["type"] == "api_error" and error["code"] == "upstream_wrong_dialect"
    assert "anthropic.messages" in error["message"]


async def test_provider_errors_pass_through_in_anthropics_own_shape(
    sut: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    await fake_behaviour(fakellm, "claude-one", error_rate=1.0, error_status=529)
    with pytest.raises(anthropic.APIStatusError) as info:
        await client(sut).messages.create(model="support", max_tokens=8, messages=[USER])
    assert info.value.status_code == 529
    assert info.value.body == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "injected error 529"},
    }


async def test_a_stream_cut_by_the_provider_ends_with_an_error_event(
    sut: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    await fake_behaviour(fakellm, "claude-one", reset_after_tokens=3)
    body = {"model": AGENT, "max_tokens": 64, "messages": [USER], "stream": True}
    status, _, raw = await post(sut, "/v1/messages", body)
    assert status == 200
    last = raw.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert last.startswith(b"event: error\ndata: ")
    error = anthropic_error(last.split(b"data: ", 1)[1])
    assert error["type"] == "api_error" and error["code"] == "upstream_unreachable"
    with pytest.raises(anthropic.APIError):
        async with client(sut).messages.stream(
            model="support", max_tokens=64, messages=[USER]
        ) as stream:
            await stream.get_final_message()


async def test_a_provider_streaming_another_api_ends_with_an_error_event(
    sut: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    chunk = '{"id": "x", "object": "chat.completion.chunk", "choices": [{"index": 0, ' \
            '"delta": {"content": "hi"}}]}'  # fmt: skip
    await fake_behaviour(fakellm, "claude-one", raw_body=chunk)
    body = {"model": AGENT, "max_tokens": 8, "messages": [USER], "stream": True}
    status, _, raw = await post(sut, "/v1/messages", body)
    assert status == 200
    assert raw.startswith(b"event: error\ndata: ") and raw.count(b"\n\n") == 1  # nothing else
    error = anthropic_error(raw.split(b"data: ", 1)[1])
    assert error["type"] == "api_error" and error["code"] == "upstream_wrong_dialect"
    with pytest.raises(anthropic.APIError, match=r"not anthropic\.messages events"):
        async with client(sut).messages.stream(
            model="support", max_tokens=8, messages=[USER]
        ) as stream:
            await stream.get_final_message()
