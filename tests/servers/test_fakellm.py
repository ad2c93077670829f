"""The fake upstream over real HTTP: the openai SDK for the API, raw aiohttp for the rest."""

from __future__ import annotations

import asyncio
import json
import math
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletionFunctionToolParam, ChatCompletionUserMessageParam

from holdfast_devtools.fakellm.app import FakeLLM, FakeSettings, start

KEY = "sk-fake-test-key"
USER: ChatCompletionUserMessageParam = {"role": "user", "content": "Where should we hike?"}
WEATHER: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit"],
        },
    },
}


@asynccontextmanager
async def serving(settings: FakeSettings | None = None) -> AsyncIterator[str]:
    runner, port = await start(FakeLLM(settings or FakeSettings()), host="127.0.0.1", port=0)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with serving() as base:
        yield base


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def sdk(url: str) -> AsyncIterator[AsyncOpenAI]:
    client = AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0)
    yield client
    await client.close()


async def put(http: aiohttp.ClientSession, url: str, model: str, **fields: Any) -> None:
    async with http.put(f"{url}/_control/models/{model}", json=fields) as resp:
        assert resp.status == 200, await resp.text()


async def stats(http: aiohttp.ClientSession, url: str, model: str) -> dict[str, int]:
    async with http.get(f"{url}/_control/stats") as resp:
        body: dict[str, Any] = await resp.json()
    result: dict[str, int] = body["models"][model]
    return result


def chat_body(model: str = "gpt-4o-mini", **over: Any) -> dict[str, Any]:
    return {"model": model, "messages": [USER], **over}


async def test_chat_non_streaming(sdk: AsyncOpenAI) -> None:
    mini = await sdk.chat.completions.create(model="gpt-4o-mini", messages=[USER])
    big = await sdk.chat.completions.create(model="gpt-4o", messages=[USER])
    again = await sdk.chat.completions.create(model="gpt-4o-mini", messages=[USER])
    text = mini.choices[0].message.content or ""
    assert text.startswith("[gpt-4o-mini] ") and text == again.choices[0].message.content
    assert (big.choices[0].message.content or "").startswith("[gpt-4o] ")
    assert mini.choices[0].finish_reason == "stop"
    assert mini.usage is not None
    assert (mini.usage.prompt_tokens, mini.usage.completion_tokens) == (5 + 3, 12)
    short = await sdk.chat.completions.create(model="gpt-4o-mini", messages=[USER], max_tokens=4)
    assert short.choices[0].finish_reason == "length"
    assert short.usage is not None and short.usage.completion_tokens == 4
    assert text.startswith(short.choices[0].message.content or "-")


@pytest.mark.parametrize("include_usage", [False, True])
async def test_chat_streaming(sdk: AsyncOpenAI, include_usage: bool) -> None:
    expected = await sdk.chat.completions.create(model="gpt-4o", messages=[USER])
    stream = await sdk.chat.completions.create(
        model="gpt-4o",
        messages=[USER],
        stream=True,
        stream_options={"include_usage": include_usage},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert len(chunks) == 1 + 12 + 1 + include_usage
    if include_usage:
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.model_dump()["completion_tokens"] == 12
    else:
        assert all(c.usage is None for c in chunks)


@pytest.mark.parametrize("streaming", [False, True])
async def test_tool_calls(sdk: AsyncOpenAI, streaming: bool) -> None:
    ask = {"role": "user", "content": "call:get_weather for Oslo"}
    kwargs: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [ask], "tools": [WEATHER]}
    whole = await sdk.chat.completions.create(**kwargs)
    (call,) = whole.choices[0].message.tool_calls or []
    assert whole.choices[0].finish_reason == "tool_calls"
    assert call.type == "function" and call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert arguments["unit"] in ("celsius", "fahrenheit") and isinstance(arguments["city"], str)
    assert 1 <= arguments["days"] <= 7
    if not streaming:
        return
    stream = await sdk.chat.completions.create(**kwargs, stream=True)
    fragments: list[str] = []
    names, ids, finish = [], [], None
    async for chunk in stream:
        choice = chunk.choices[0]
        finish = choice.finish_reason or finish
        for delta in choice.delta.tool_calls or []:
            assert delta.index == 0
            ids += [delta.id] if delta.id else []
            names += [delta.function.name] if delta.function and delta.function.name else []
            if delta.function and delta.function.arguments:
                fragments.append(delta.function.arguments)
    assert (names, ids, finish) == (["get_weather"], [call.id], "tool_calls")
    assert len(fragments) > 2 and "".join(fragments) == call.function.arguments


async def test_tool_calls_behaviour_flag(
    sdk: AsyncOpenAI, http: aiohttp.ClientSession, url: str
) -> None:
    plain = await sdk.chat.completions.create(model="toolish", messages=[USER], tools=[WEATHER])
    assert plain.choices[0].message.tool_calls is None
    await put(http, url, "toolish", tool_calls=True)
    forced = await sdk.chat.completions.create(model="toolish", messages=[USER], tools=[WEATHER])
    assert forced.choices[0].finish_reason == "tool_calls"


async def test_embeddings_and_models(sdk: AsyncOpenAI) -> None:
    default = await sdk.embeddings.create(model="text-embedding-3-small", input=["a", "b c"])
    assert [len(d.embedding) for d in default.data] == [16, 16]  # base64 on the wire
    assert math.isclose(sum(v * v for v in default.data[0].embedding), 1.0, rel_tol=1e-5)
    assert default.usage.prompt_tokens == 3
    floats = await sdk.embeddings.create(
        model="text-embedding-3-small", input="a", dimensions=8, encoding_format="float"
    )
    assert len(floats.data[0].embedding) == 8
    await sdk.chat.completions.create(model="custom-model", messages=[USER])
    models = [m.id async for m in sdk.models.list()]
    assert models == ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small", "custom-model"]


async def test_validation_errors(http: aiohttp.ClientSession, url: str) -> None:
    cases: list[tuple[bytes, str | None]] = [
        (b"{not json", "invalid_json"),
        (json.dumps({"messages": [USER]}).encode(), "missing_required_parameter"),
        (json.dumps({"model": "m", "messages": "hi"}).encode(), "invalid_value"),
        (json.dumps(chat_body(n=2)).encode(), "unsupported_value"),
    ]
    for data, code in cases:
        async with http.post(f"{url}/v1/chat/completions", data=data) as resp:
            body = await resp.json()
            assert resp.status == 400
            assert set(body["error"]) == {"message", "type", "code", "param"}
            assert body["error"]["code"] == code
    async with http.get(f"{url}/v1/nowhere") as resp:
        assert resp.status == 404 and "error" in await resp.json()


async def test_require_key() -> None:
    async with serving(FakeSettings(require_key=KEY)) as base, aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with http.post(
                f"{base}/v1/chat/completions", json=chat_body(), headers=headers
            ) as r:
                assert r.status == 401
                assert (await r.json())["error"]["code"] == "invalid_api_key"
        sdk = AsyncOpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)
        await sdk.chat.completions.create(model="m", messages=[USER])
        await sdk.close()
        async with http.get(f"{base}/_control/requests?limit=1") as resp:
            (seen,) = (await resp.json())["requests"]
        assert seen["headers"]["authorization"] == f"Bearer {KEY}"


async def test_error_rate_is_deterministic(http: aiohttp.ClientSession, url: str) -> None:
    await put(http, url, "flaky", error_rate=0.25, error_status=503)
    statuses = []
    for _ in range(8):
        async with http.post(f"{url}/v1/chat/completions", json=chat_body("flaky")) as resp:
            statuses.append(resp.status)
    assert statuses == [200, 200, 200, 503, 200, 200, 200, 503]
    assert (await stats(http, url, "flaky"))["errors"] == 2
    await put(http, url, "limited", error_rate=1.0, error_status=429, retry_after_s=7)
    async with http.post(f"{url}/v1/embeddings", json={"model": "limited", "input": "x"}) as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "7"
        assert (await resp.json())["error"]["code"] == "rate_limit_exceeded"


async def test_control_api(http: aiohttp.ClientSession, url: str) -> None:
    base = f"{url}/_control/models/m1"
    async with http.put(base, json={"latency": 3}) as resp:
        assert resp.status == 400 and "latency" in (await resp.json())["error"]["message"]
    async with http.put(base, json={"error_rate": 2}) as resp:
        assert resp.status == 400 and "error_rate" in (await resp.json())["error"]["message"]
    async with http.put(base, data=b"{") as resp:
        assert resp.status == 400
    await put(http, url, "m1", omit_usage=True, completion_tokens=3)
    async with http.get(base) as resp:
        shown = await resp.json()
        assert shown["overridden"] and shown["behaviour"]["completion_tokens"] == 3
    headers = {
        "X-Holdfast-Session": "s-1",
        "X-Request-Id": "r-1",
        "User-Agent": "t",
        "X-Other": "no",
    }
    async with http.post(
        f"{url}/v1/chat/completions", json=chat_body("m1"), headers=headers
    ) as resp:
        body = await resp.json()
        assert "usage" not in body and body["choices"][0]["message"]["content"].count(" ") == 2
    streamed = chat_body("m1", stream=True, stream_options={"include_usage": True})
    async with http.post(f"{url}/v1/chat/completions", json=streamed) as resp:
        raw = await resp.read()
        assert b"[DONE]" in raw and b'"usage"' not in raw
    async with http.get(f"{url}/_control/requests?limit=1") as resp:
        (seen,) = (await resp.json())["requests"]
        assert seen["body"]["stream"] is True
    async with http.get(f"{url}/_control/requests?limit=5") as resp:
        seen, _ = (await resp.json())["requests"]
    assert seen["model"] == "m1" and seen["path"] == "/v1/chat/completions"
    assert seen["body"]["messages"] == [USER]
    assert seen["headers"] == {
        "accept-encoding": "gzip, deflate",  # what aiohttp's client asks for by default
        "x-holdfast-session": "s-1",
        "x-request-id": "r-1",
        "user-agent": "t",
    }
    async with http.delete(base) as resp:
        shown = await resp.json()
        assert not shown["overridden"] and shown["behaviour"]["completion_tokens"] == 12
    assert (await stats(http, url, "m1"))["requests"] == 2
    async with http.post(f"{url}/_control/reset") as resp:
        assert resp.status == 200
    async with http.get(f"{url}/_control/stats") as resp:
        assert (await resp.json())["models"] == {}
    async with http.get(f"{url}/_control/requests") as resp:
        assert (await resp.json())["requests"] == []
    async with http.get(f"{url}/_control/requests?limit=x") as resp:
        assert resp.status == 400


async def read_events(resp: aiohttp.ClientResponse, count: int) -> list[bytes]:
    events: list[bytes] = []
    while len(events) < count:
        line = await resp.content.readline()
        if line.startswith(b"data: "):
            events.append(line)
    return events


async def eventually(check: Callable[[], Awaitable[bool]], attempts: int = 250) -> None:
    """Poll the server (the stats endpoint) until ``check`` holds."""
    for _ in range(attempts):
        if await check():
            return
        await asyncio.sleep(0.02)
    pytest.fail("condition not met in time")


async def test_stall_then_client_disconnect_counts_as_cancelled(
    http: aiohttp.ClientSession, url: str
) -> None:
    await put(http, url, "stally", stall_after_tokens=2)
    resp = await http.post(f"{url}/v1/chat/completions", json=chat_body("stally", stream=True))
    assert len(await read_events(resp, 3)) == 3  # role chunk + 2 tokens, then silence
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(read_events(resp, 1), 0.3)
    assert (await stats(http, url, "stally"))["in_flight"] == 1
    resp.close()  # hang up mid-stream

    async def cancelled() -> bool:
        now = await stats(http, url, "stally")
        return now["streams_cancelled"] == 1 and now["in_flight"] == 0

    await eventually(cancelled)
    assert (await stats(http, url, "stally"))["streams_completed"] == 0


async def test_reset_mid_stream_breaks_the_stream(
    sdk: AsyncOpenAI, http: aiohttp.ClientSession, url: str
) -> None:
    await put(http, url, "resetty", reset_after_tokens=3)
    async with http.post(f"{url}/v1/chat/completions", json=chat_body("resetty", stream=True)) as r:
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()
    stream = await sdk.chat.completions.create(model="resetty", messages=[USER], stream=True)
    received: list[str] = []

    async def consume() -> None:
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")

    with pytest.raises(openai.APIError):
        await consume()
    assert len(received) == 4  # role chunk and 3 tokens arrived before the reset
    await put(http, url, "resetty", reset_after_tokens=12)  # after the last token, before the end
    async with http.post(f"{url}/v1/chat/completions", json=chat_body("resetty", stream=True)) as r:
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()
    now = await stats(http, url, "resetty")
    assert (now["streams_reset"], now["streams_completed"], now["in_flight"]) == (3, 0, 0)
    async with http.get(f"{url}/_control/requests?limit=1") as resp:
        [broken] = (await resp.json())["requests"]
    assert "stream_completed" not in broken  # its end never went out
    await put(http, url, "resetty", reset_after_tokens=None)
    async with http.post(f"{url}/v1/chat/completions", json=chat_body("resetty", stream=True)) as r:
        await r.read()
    async with http.get(f"{url}/_control/requests?limit=1") as resp:
        [whole] = (await resp.json())["requests"]
    assert whole["stream_completed"] is True  # the log says which streams ended whole


async def test_pacing_and_immediate_flush(http: aiohttp.ClientSession, url: str) -> None:
    await put(http, url, "slow", first_byte_ms=200, token_interval_ms=150, completion_tokens=4)
    started = time.monotonic()
    async with http.post(f"{url}/v1/chat/completions", json=chat_body("slow", stream=True)) as r:
        await read_events(r, 1)
        first = time.monotonic() - started
        await r.read()
    total = time.monotonic() - started
    assert 0.2 <= first < 0.5  # the role chunk arrives alone, not buffered with the rest
    assert total >= 0.2 + 4 * 0.15
    await put(http, url, "slow", latency_ms=250)
    started = time.monotonic()
    async with http.post(f"{url}/v1/chat/completions", json=chat_body("slow")) as r:
        assert r.status == 200
    assert time.monotonic() - started >= 0.25


async def test_console_script_serves_and_exits_cleanly_on_sigterm() -> None:
    script = Path(sys.executable).parent / "holdfast-fakellm"
    proc = await asyncio.create_subprocess_exec(
        str(script),
        "--listen",
        "127.0.0.1:0",
        "--completion-tokens",
        "5",
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        event: dict[str, Any] = {}
        while event.get("event") != "fakellm_listening":
            line = await asyncio.wait_for(proc.stderr.readline(), 15)
            assert line, "exited before listening"
            event = json.loads(line)
        assert event["host"] == "127.0.0.1" and event["port"] > 0
        base = f"http://127.0.0.1:{event['port']}"
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/v1/chat/completions", json=chat_body()) as resp:
                assert (await resp.json())["usage"]["completion_tokens"] == 5
            await put(http, base, "stally", stall_after_tokens=1)
            stalled = await http.post(
                f"{base}/v1/chat/completions", json=chat_body("stally", stream=True)
            )
            await read_events(stalled, 2)
            proc.send_signal(signal.SIGTERM)  # a stalled stream must not hold up the exit
            assert await asyncio.wait_for(proc.wait(), 5) == 0
            with pytest.raises(aiohttp.ClientPayloadError):
                await stalled.read()
        events = [json.loads(line)["event"] for line in (await proc.stderr.read()).splitlines()]
        assert events == ["fakellm_behaviour_set", "fakellm_stopping", "fakellm_stopped"]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
