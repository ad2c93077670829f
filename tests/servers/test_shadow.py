"""Shadow traffic through the real sidecar app against the real fake upstream process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionToolParam, ChatCompletionUserMessageParam

from holdfast.compare import answer_from_completion, similarity
from holdfast.keyspace import Route, Shadow, ShadowStats
from holdfast_devtools import procs
from sidecar.http.app import SHADOW_KEY
from sidecar.shadow.runner import ShadowRunner
from tests.servers.conftest import AGENT, KS, PROVIDER_KEY, SidecarUnderTest, start_sidecar

USER: ChatCompletionUserMessageParam = {"role": "user", "content": "how is the weather"}
EPOCH = 1_700_000_000.0
LOOKUP: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        },
    },
}


def set_shadow(sut: SidecarUnderTest, release: str, percent: float = 100.0) -> None:
    shadow = Shadow(release=release, percent=percent, since=EPOCH)
    sut._put(KS.route(AGENT), Route(agent=AGENT, stable="r1", shadow=shadow).encode())


def runner(sut: SidecarUnderTest) -> ShadowRunner:
    return sut.server.app[SHADOW_KEY]


def client(sut: SidecarUnderTest) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{sut.url}/v1", api_key="agent-key", max_retries=0)


async def stats_when(
    sut: SidecarUnderTest, done: Callable[[ShadowStats], bool], timeout: float = 5.0
) -> ShadowStats:
    deadline = time.monotonic() + timeout
    while True:
        stats = runner(sut).stats()
        if stats and done(stats[0]):
            assert len(stats) == 1, stats
            return stats[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"shadow stats never got there: {stats}")
        await asyncio.sleep(0.02)


async def fake_control(fake: procs.ManagedProcess, model: str, **behaviour: Any) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{fake.url}/_control/models/{model}", json=behaviour) as resp:
            assert resp.status == 200, await resp.text()


async def fake_text(fake: procs.ManagedProcess, model: str) -> str:
    """What the fake answers ``model`` for USER, asked directly (not through the sidecar)."""
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{fake.url}/v1/chat/completions",
            json={"model": model, "messages": [USER]},
            headers={"Authorization": f"Bearer {PROVIDER_KEY}"},
        ) as resp:
            return answer_from_completion(await resp.read()).text


async def metrics_text(sut: SidecarUnderTest) -> str:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sut.url}/metrics") as resp:
            return await resp.text()


def outcome_line(outcome: str, count: int, release: str = "r2") -> str:
    return (
        f'holdfast_shadow_requests_total{{agent="{AGENT}",outcome="{outcome}",'
        f'shadow_release="{release}"}} {float(count)}'
    )


@pytest.fixture
async def tuned(fakellm: procs.ManagedProcess) -> AsyncIterator[Callable[..., Any]]:
    """Start a sidecar with its own settings; closed at the end of the test."""
    started: list[SidecarUnderTest] = []

    async def start(**over: Any) -> SidecarUnderTest:
        sut = await start_sidecar(fakellm.url, **over)
        sut.add_release("r1", "model-one")
        sut.add_release("r2", "model-two")
        set_shadow(sut, "r2")
        started.append(sut)
        return sut

    yield start
    for sut in started:
        await sut.server.close()


async def test_same_model_shadow_agrees_fully(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    sidecar.add_release("r1-twin", "model-one")
    set_shadow(sidecar, "r1-twin")
    c = client(sidecar)
    raw = await c.chat.completions.with_raw_response.create(model=AGENT, messages=[USER])
    tool_user: ChatCompletionUserMessageParam = {"role": "user", "content": "call:lookup now"}
    called = await c.chat.completions.create(model=AGENT, messages=[tool_user], tools=[LOOKUP])
    assert called.choices[0].message.tool_calls
    stats = await stats_when(sidecar, lambda s: s.samples == 2)
    assert (stats.primary, stats.shadow, stats.epoch) == ("r1", "r1-twin", EPOCH)
    assert stats.similarity_sum == 2.0 and stats.similarity_min == 1.0
    assert (stats.tool_samples, stats.tool_agree) == (1, 2)  # agreement rate 2/2
    usage = raw.parse().usage
    assert usage is not None and called.usage is not None
    assert stats.primary_prompt_tokens == usage.prompt_tokens + called.usage.prompt_tokens
    assert stats.shadow_prompt_tokens == stats.primary_prompt_tokens
    assert stats.shadow_completion_tokens == stats.primary_completion_tokens > 0
    # The agent saw the primary's answer only; the shadow went out non-streaming, tagged.
    assert raw.headers["x-holdfast-release"] == "r1"
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fakellm.url}/_control/requests") as resp:
            seen = (await resp.json())["requests"]
    shadowed = [r for r in seen if r["headers"].get("x-request-id", "").endswith("-shadow")]
    assert len(shadowed) == 2 and all(r["body"]["stream"] is False for r in shadowed)


async def test_other_model_similarity_matches_the_fakes_answers(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    expected = similarity(
        await fake_text(fakellm, "model-one"), await fake_text(fakellm, "model-two")
    )
    assert 0.0 < expected < 1.0  # the two models really answer differently
    set_shadow(sidecar, "r2")
    await client(sidecar).chat.completions.create(model=AGENT, messages=[USER])
    stats = await stats_when(sidecar, lambda s: s.samples == 1)
    assert stats.similarity_sum == pytest.approx(expected)
    assert stats.similarity_min == pytest.approx(expected)
    assert (stats.tool_samples, stats.tool_agree) == (0, 1)  # neither side called a tool
    metrics = await metrics_text(sidecar)
    assert outcome_line("compared", 1) in metrics
    assert f'holdfast_shadow_similarity_count{{agent="{AGENT}",shadow_release="r2"}} 1.0' in metrics


async def test_streaming_primary_is_captured_and_compared(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    expected = similarity(
        await fake_text(fakellm, "model-one"), await fake_text(fakellm, "model-two")
    )
    set_shadow(sidecar, "r2")
    stream = await client(sidecar).chat.completions.create(
        model=AGENT, messages=[USER], stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    relayed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert relayed == await fake_text(fakellm, "model-one")
    stats = await stats_when(sidecar, lambda s: s.samples == 1)
    assert stats.similarity_sum == pytest.approx(expected)
    usage = chunks[-1].usage
    assert usage is not None
    assert stats.primary_completion_tokens == usage.completion_tokens > 0


async def test_slow_shadow_does_not_delay_the_primary(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    await fake_control(fakellm, "model-two", latency_ms=1500)
    set_shadow(sidecar, "r2")
    c = client(sidecar)

    async def streamed() -> None:
        stream = await c.chat.completions.create(model=AGENT, messages=[USER], stream=True)
        async for _ in stream:
            pass

    began = time.perf_counter()
    await asyncio.gather(c.chat.completions.create(model=AGENT, messages=[USER]), streamed())
    assert time.perf_counter() - began < 0.75
    stats = await stats_when(sidecar, lambda s: s.samples == 2)
    assert stats.shadow_latency_ms_sum >= 2 * 1500
    assert stats.primary_latency_ms_sum < 2 * 750


async def test_shadow_errors_are_counted_and_never_reach_the_agent(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    await fake_control(fakellm, "model-two", error_rate=1.0, error_status=503)
    set_shadow(sidecar, "r2")
    c = client(sidecar)
    answer = await c.chat.completions.create(model=AGENT, messages=[USER])
    stream = await c.chat.completions.create(model=AGENT, messages=[USER], stream=True)
    text = "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])
    assert answer.choices[0].message.content == text == await fake_text(fakellm, "model-one")
    stats = await stats_when(sidecar, lambda s: s.shadow_errors == 2)
    assert stats.samples == 0
    assert outcome_line("error", 2) in await metrics_text(sidecar)


async def test_a_failed_primary_abandons_its_sample(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    await fake_control(fakellm, "model-one", error_rate=1.0, error_status=500)
    await fake_control(fakellm, "model-two", latency_ms=300)
    set_shadow(sidecar, "r2")
    with pytest.raises(openai.InternalServerError):
        await client(sidecar).chat.completions.create(model=AGENT, messages=[USER])
    deadline = time.monotonic() + 3
    while outcome_line("abandoned", 1) not in await metrics_text(sidecar):
        assert time.monotonic() < deadline, await metrics_text(sidecar)
        await asyncio.sleep(0.02)
    assert runner(sidecar).in_flight == 0
    assert all(s.samples == 0 for s in runner(sidecar).stats())


async def test_unsampled_and_self_shadows_send_nothing(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    c = client(sidecar)
    set_shadow(sidecar, "r2", percent=0)
    await c.chat.completions.create(model=AGENT, messages=[USER])
    set_shadow(sidecar, "r1")  # the release that serves the request already
    await c.chat.completions.create(model=AGENT, messages=[USER])
    await asyncio.sleep(0.1)
    assert runner(sidecar).stats() == ()
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fakellm.url}/_control/requests") as resp:
            assert len((await resp.json())["requests"]) == 2


async def test_concurrency_bound_skips_samples(
    tuned: Callable[..., Any], fakellm: procs.ManagedProcess
) -> None:
    await fake_control(fakellm, "model-two", latency_ms=600)
    sut: SidecarUnderTest = await tuned(shadow_max_concurrency=1)
    c = client(sut)
    await asyncio.gather(
        *(c.chat.completions.create(model=AGENT, messages=[USER]) for _ in range(3))
    )
    stats = await stats_when(sut, lambda s: s.samples == 1)
    assert stats.skipped == 2
    assert outcome_line("skipped_busy", 2) in await metrics_text(sut)


async def test_token_budget_skips_samples_until_refilled(
    tuned: Callable[..., Any], fakellm: procs.ManagedProcess
) -> None:
    # One shadow answer costs ~25 tokens: a 10-a-minute budget is in debt for over a minute.
    sut: SidecarUnderTest = await tuned(shadow_tokens_per_minute=10)
    c = client(sut)
    await c.chat.completions.create(model=AGENT, messages=[USER])
    await stats_when(sut, lambda s: s.samples == 1)
    for _ in range(2):
        await c.chat.completions.create(model=AGENT, messages=[USER])
    stats = runner(sut).stats()[0]
    assert (stats.samples, stats.skipped) == (1, 2)
    assert stats.shadow_prompt_tokens + stats.shadow_completion_tokens > 10
    assert outcome_line("skipped_budget", 2) in await metrics_text(sut)


async def test_close_cancels_a_running_shadow_call(
    sidecar: SidecarUnderTest, fakellm: procs.ManagedProcess
) -> None:
    await fake_control(fakellm, "model-two", latency_ms=5000)
    set_shadow(sidecar, "r2")
    await client(sidecar).chat.completions.create(model=AGENT, messages=[USER])
    assert runner(sidecar).in_flight == 1
    began = time.perf_counter()
    await runner(sidecar).close()
    assert time.perf_counter() - began < 1.0
    assert runner(sidecar).in_flight == 0
    assert outcome_line("abandoned", 1) in await metrics_text(sidecar)
