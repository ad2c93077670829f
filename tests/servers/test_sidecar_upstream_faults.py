"""Provider faults reach the agent as distinct, correct errors; a hang-up cancels the provider."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionUserMessageParam

from holdfast_devtools import procs
from tests.servers.conftest import SidecarUnderTest, start_sidecar

USER: ChatCompletionUserMessageParam = {"role": "user", "content": "hello there"}


async def behave(fakellm: procs.ManagedProcess, model: str, **behaviour: Any) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{fakellm.url}/_control/models/{model}", json=behaviour) as resp:
            assert resp.status == 200, await resp.text()


async def stats(fakellm: procs.ManagedProcess, model: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fakellm.url}/_control/stats") as resp:
            body = await resp.json()
    result: dict[str, int] = body["models"].get(model, {})
    return result


def client(sut: SidecarUnderTest) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{sut.url}/v1", api_key="k", max_retries=0)


async def sse_events(sut: SidecarUnderTest) -> list[dict[str, Any]]:
    body = {"model": "support", "messages": [USER], "stream": True}
    events: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sut.url}/v1/chat/completions", json=body) as resp:
            assert resp.status == 200
            async for line in resp.content:
                text = line.decode().strip()
                if text.startswith("data: ") and text != "data: [DONE]":
                    events.append(json.loads(text[6:]))
    return events


async def test_provider_error_passes_through_with_retry_after(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    await behave(fakellm, "model-one", error_rate=1.0, error_status=429, retry_after_s=7)
    with pytest.raises(openai.RateLimitError) as info:
        await client(sidecar).chat.completions.create(model="support", messages=[USER])
    headers = info.value.response.headers
    assert headers["retry-after"] == "7"
    assert headers["x-holdfast-release"] == "r1"


async def test_provider_5xx_passes_through(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    await behave(fakellm, "model-one", error_rate=1.0, error_status=503)
    with pytest.raises(openai.InternalServerError) as info:
        await client(sidecar).chat.completions.create(model="support", messages=[USER])
    assert info.value.status_code == 503


async def test_slow_provider_is_504(fakellm: procs.ManagedProcess) -> None:
    sut = await start_sidecar(fakellm.url, request_timeout=0.5)
    try:
        sut.add_release("slow", "model-slow")
        sut.set_stable("slow")
        await behave(fakellm, "model-slow", latency_ms=3000)
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as info:
            await client(sut).chat.completions.create(model="support", messages=[USER])
        assert info.value.status_code == 504
        assert time.monotonic() - started < 2.5
    finally:
        await sut.server.close()


async def test_slow_first_byte_on_a_stream_is_504(fakellm: procs.ManagedProcess) -> None:
    sut = await start_sidecar(fakellm.url, first_byte_timeout=0.5)
    try:
        sut.add_release("slow", "model-slow-fb")
        sut.set_stable("slow")
        await behave(fakellm, "model-slow-fb", first_byte_ms=3000)
        status, body = await _post_json(
            sut, {"model": "support", "messages": [USER], "stream": True}
        )
        assert status == 504
        assert body["error"]["code"] == "upstream_timeout"
    finally:
        await sut.server.close()


async def _post_json(sut: SidecarUnderTest, body: dict[str, Any]) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sut.url}/v1/chat/completions", json=body) as resp:
            return resp.status, await resp.json()


async def test_stalled_stream_ends_with_in_band_timeout(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    await behave(fakellm, "model-one", stall_after_tokens=2)
    events = await sse_events(sidecar)  # the sidecar's stream idle timeout is 2 s in tests
    assert events[-1]["error"]["code"] == "upstream_timeout"
    assert any(e.get("choices") for e in events[:-1])


async def test_reset_stream_ends_with_in_band_error(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    await behave(fakellm, "model-one", reset_after_tokens=3)
    events = await sse_events(sidecar)
    assert events[-1]["error"]["code"] == "upstream_unreachable"


async def test_client_disconnect_cancels_the_provider_stream_within_a_second(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    await behave(fakellm, "model-one", token_interval_ms=100, completion_tokens=200)
    body = {"model": "support", "messages": [USER], "stream": True}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sidecar.url}/v1/chat/completions", json=body) as resp:
            await resp.content.readline()
        # leaving the block closes the connection mid-stream
    hung_up = time.monotonic()
    while time.monotonic() - hung_up < 1.0:
        s = await stats(fakellm, "model-one")
        if s.get("streams_cancelled") == 1 and s.get("in_flight") == 0:
            break
        await asyncio.sleep(0.02)
    s = await stats(fakellm, "model-one")
    assert s["streams_cancelled"] == 1
    assert s["streams_completed"] == 0
    assert s["in_flight"] == 0


async def test_client_disconnect_cancels_a_plain_provider_call_within_a_second(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    """Non-streaming: the agent hangs up while the provider is still thinking; the sidecar's
    call to the provider is cancelled, so the provider stops working for nobody."""
    await behave(fakellm, "model-one", latency_ms=5000)
    port = sidecar.server.port
    assert port is not None
    body = json.dumps({"model": "support", "messages": [USER]}).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + body)
    await writer.drain()
    deadline = time.monotonic() + 5
    while (await stats(fakellm, "model-one")).get("in_flight") != 1:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    writer.close()  # hang up mid-request
    hung_up = time.monotonic()
    while (await stats(fakellm, "model-one")).get("in_flight") != 0:
        assert time.monotonic() - hung_up < 1.0, "the provider call outlived the agent"
        await asyncio.sleep(0.02)
    s = await stats(fakellm, "model-one")
    assert s["requests"] == 1 and s["completion_tokens"] == 0  # cut short, never answered
