"""What a request costs when it does not end well, on the real sidecar app against the real fake
upstream: an agent that hangs up (before the answer, before the first chunk), absurd provider
usage, which cap field is written, and shadow traffic next to budget refusals."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from holdfast.dialects import openai_chat
from holdfast.dialects.base import MAX_USAGE_TOKENS, USAGE_REJECTED
from holdfast.keyspace import Route, Shadow
from holdfast.keyspace.health import HealthSnapshot
from holdfast.store import Change
from holdfast_devtools import procs
from sidecar.budgets.ledger import Ledger
from sidecar.http.app import SHADOW_KEY
from sidecar.ops.health import HealthSources, build_snapshot
from sidecar.shadow.runner import ShadowRunner
from sidecar.signals.book import SignalBook
from tests.servers.conftest import AGENT, KS, SidecarUnderTest
from tests.servers.test_budget_filter import (  # noqa: F401 - a fixture is used by name
    MESSAGES,
    SESSION,
    budgeted,
    chat,
    fake,
    put_budget,
    settled,
    start_budgeted,
)

PROMPT = openai_chat.DIALECT.parse({"model": AGENT, "messages": MESSAGES}).prompt_estimate("bytes")
HUGE = 10**19  # parses, and is past what a spend report or a health snapshot can hold


@pytest.fixture
async def budgeted_book(
    fakellm: procs.ManagedProcess, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[SidecarUnderTest, Ledger, SignalBook]]:
    book = SignalBook()
    sut, ledger = await start_budgeted(fakellm, {"signals": book})
    yield sut, ledger, book
    await sut.server.close()


def runner(sut: SidecarUnderTest) -> ShadowRunner:
    return sut.server.app[SHADOW_KEY]


async def hang_up(sut: SidecarUnderTest, *, stream: bool, after_lines: int = 0) -> None:
    """Send a chat and go away: after ``after_lines`` lines of the stream, or after 0.2 s."""
    payload = {"model": AGENT, "messages": MESSAGES, "stream": stream}
    headers = {"X-Holdfast-Session": SESSION}
    async with aiohttp.ClientSession() as http:
        if after_lines:
            async with http.post(
                f"{sut.url}/v1/chat/completions", json=payload, headers=headers
            ) as resp:
                for _ in range(after_lines):
                    await resp.content.readline()
            return
        with pytest.raises(TimeoutError):
            await http.post(
                f"{sut.url}/v1/chat/completions",
                json=payload,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=0.2),
            )


async def upstream_idle(sut: SidecarUnderTest, model: str) -> dict[str, int]:
    """The fake's stats once nothing is in flight: within 1 s of a hang-up (issue 9)."""
    deadline = time.monotonic() + 1.0
    while True:
        stats: dict[str, int] = (await fake(sut, "GET", "/_control/stats"))["models"][model]
        if stats["in_flight"] == 0 or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.02)


async def test_an_agent_that_hangs_up_before_the_answer_is_charged_the_whole_reservation(
    budgeted: tuple[SidecarUnderTest, Ledger],  # noqa: F811 - the imported fixture
) -> None:
    sut, ledger = budgeted
    cap = 100
    put_budget(sut, tokens=5 * (PROMPT + cap) + 10, request_cap=cap)
    await fake(sut, "PUT", "/_control/models/model-one", {"latency_ms": 3000})
    for i in range(1, 6):
        await hang_up(sut, stream=False)  # the agent's own timeout fires every time
        m = await settled(ledger)
        assert m.tally.spent == m.tally.estimated == i * (PROMPT + cap)
        stats = await upstream_idle(sut, "model-one")
        assert stats["in_flight"] == 0 and stats["requests"] == i  # the provider call was cut
    refused = await chat(sut)
    assert refused.status == 429  # such an agent cannot spend without limit
    assert (await refused.json())["error"]["code"] == "budget_exhausted"
    assert (await fake(sut, "GET", "/_control/stats"))["models"]["model-one"]["requests"] == 5


async def test_a_stream_cut_before_its_first_chunk_is_charged_its_prompt(
    budgeted: tuple[SidecarUnderTest, Ledger],  # noqa: F811 - the imported fixture
) -> None:
    sut, ledger = budgeted
    put_budget(sut, tokens=100_000)
    await fake(sut, "PUT", "/_control/models/model-one", {"first_byte_ms": 3000})
    await hang_up(sut, stream=True)  # no response head yet
    m = await settled(ledger)
    assert m.tally.spent == m.tally.estimated == PROMPT
    # the head and the role chunk arrived, no content yet: the prompt, and what was drained
    await fake(
        sut, "PUT", "/_control/models/model-one", {"token_interval_ms": 3000, "first_byte_ms": 0}
    )
    await hang_up(sut, stream=True, after_lines=1)
    m = await settled(ledger)
    assert m.tally.spent == m.tally.estimated == 2 * PROMPT
    stats = await upstream_idle(sut, "model-one")
    assert stats["in_flight"] == 0 and stats["streams_cancelled"] == 2
    assert stats["completion_tokens"] == 0


async def test_the_cap_goes_into_the_field_the_agent_uses_and_both_caps_count(
    budgeted: tuple[SidecarUnderTest, Ledger],  # noqa: F811 - the imported fixture
) -> None:
    sut, ledger = budgeted
    put_budget(sut, tokens=100_000, request_cap=32)
    ok = await chat(sut, max_completion_tokens=None)  # a reasoning-model agent, no cap
    assert ok.status == 200, await ok.text()
    sent = (await fake(sut, "GET", "/_control/requests"))["requests"][-1]["body"]
    assert sent["max_completion_tokens"] == 32 and "max_tokens" not in sent
    spent = (await settled(ledger)).tally.spent
    put_budget(sut, tokens=spent + PROMPT + 50, request_cap=32)
    # both fields sent: the larger is reserved, whichever of them the provider honours
    refused = await chat(sut, max_tokens=10, max_completion_tokens=60)
    assert refused.status == 429
    assert f"needs up to {PROMPT + 60}" in (await refused.json())["error"]["message"]
    assert (await chat(sut, max_tokens=10, max_completion_tokens=40)).status == 200


@pytest.mark.parametrize("stream", [False, True])
async def test_absurd_provider_usage_is_estimated_for_budgets_and_health(
    budgeted_book: tuple[SidecarUnderTest, Ledger, SignalBook], stream: bool
) -> None:
    sut, ledger, book = budgeted_book
    put_budget(sut, tokens=100_000, request_cap=32)
    usage = {"prompt_tokens": HUGE, "completion_tokens": 7}
    answer: dict[str, Any] = (
        {"choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": usage}
        if stream
        else {"choices": [{"message": {"role": "assistant", "content": "hi there"}}]}
        | {"usage": usage}
    )
    raw = json.dumps(answer)
    await fake(sut, "PUT", "/_control/models/model-one", {"raw_body": raw})
    before = sum(USAGE_REJECTED.values())
    payload = {"model": AGENT, "messages": MESSAGES, "stream": stream}
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sut.url}/v1/chat/completions",
            json=payload,
            headers={"X-Holdfast-Session": SESSION},
        ) as resp:
            body = await resp.read()
            assert resp.status == 200
        assert raw.encode() in body  # relayed untouched
        m = await settled(ledger)
        completion = 1 if stream else 2  # one content delta / "hi there" at 4 chars a token
        assert m.tally.spent == m.tally.estimated == PROMPT + completion
        assert sum(USAGE_REJECTED.values()) > before
        async with http.get(f"{sut.url}/metrics") as resp:
            metrics = await resp.text()
    assert "holdfast_provider_usage_rejected_total{" in metrics
    # the health snapshot still encodes, with no absurd number in it
    sources = HealthSources(config_revision=lambda: 1, signals=book.signals)
    snapshot = build_snapshot(sources, sidecar_id="sc-1", agent=AGENT, started_at=0.0, now=1.0)
    decoded = HealthSnapshot.decode(snapshot.encode())
    assert decoded.signals and all(n <= MAX_USAGE_TOKENS for n in _ints(decoded.signals))
    # a sane answer afterwards is charged its reported usage again
    await fake(sut, "PUT", "/_control/models/model-one", {"raw_body": ""})
    spent = m.tally.spent
    ok = await chat(sut)
    m = await settled(ledger)
    assert m.tally.spent - spent == (await ok.json())["usage"]["total_tokens"]
    assert m.tally.estimated == spent


def _ints(value: object) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _ints(v)]
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in _ints(v)]
    to_map = getattr(value, "to_map", None)
    return _ints(to_map()) if to_map is not None else []


async def shadow_stats_settle(sut: SidecarUnderTest) -> dict[str, Any]:
    for _ in range(300):
        models = (await fake(sut, "GET", "/_control/stats"))["models"]
        if runner(sut).in_flight == 0 and not any(m["in_flight"] for m in models.values()):
            return dict(models)
        await asyncio.sleep(0.01)
    raise AssertionError(f"shadow calls never finished: in flight {runner(sut).in_flight}")


async def test_refused_requests_are_never_shadowed_and_never_hold_a_shadow_slot(
    budgeted: tuple[SidecarUnderTest, Ledger],  # noqa: F811 - the imported fixture
) -> None:
    sut, _ = budgeted
    shadow = Shadow(release="r2", percent=100.0, since=1_700_000_000.0)
    sut._put(KS.route(AGENT), Route(agent=AGENT, stable="r1", shadow=shadow).encode())
    put_budget(sut, tokens=10)  # every request needs more
    slots = runner(sut).max_concurrency
    for _ in range(slots + 3):
        assert (await chat(sut)).status == 429
    models = await shadow_stats_settle(sut)
    assert "model-one" not in models and "model-two" not in models  # nothing went out
    assert runner(sut).in_flight == 0
    put_budget(sut, tokens=100_000, request_cap=24)
    for _ in range(slots + 1):  # shadowing still works: every slot is free
        assert (await chat(sut)).status == 200
    models = await shadow_stats_settle(sut)
    assert models["model-two"]["requests"] == slots + 1
    shadowed = [
        r["body"]
        for r in (await fake(sut, "GET", "/_control/requests"))["requests"]
        if r["model"] == "model-two"
    ]
    assert shadowed and all(b["max_tokens"] == 24 for b in shadowed)  # the primary's cap
    # no budget and no cap from the agent: the shadow still gets one, the primary does not
    sut.revision += 1
    gone = Change("delete", KS.budget(f"session:{SESSION}"), b"", sut.revision)
    sut.config.apply_changes(sut.revision, [gone])
    assert (await chat(sut)).status == 200
    await shadow_stats_settle(sut)
    last = (await fake(sut, "GET", "/_control/requests"))["requests"][-2:]
    bodies = {r["model"]: r["body"] for r in last}
    assert "max_tokens" not in bodies["model-one"]
    assert bodies["model-two"]["max_tokens"] == runner(sut).default_cap


async def test_a_shadow_call_cancelled_before_it_ran_gives_its_slot_back(
    budgeted: tuple[SidecarUnderTest, Ledger],  # noqa: F811 - the imported fixture
) -> None:
    sut, _ = budgeted
    run = runner(sut)
    snapshot = sut.config.current
    assert snapshot is not None
    route = Route(agent=AGENT, stable="r1", shadow=Shadow(release="r2", percent=100.0, since=1.0))
    r1 = snapshot.releases["r1"]
    for i in range(run.max_concurrency + 2):
        chat = openai_chat.DIALECT
        request = chat.parse({"model": AGENT, "messages": MESSAGES})
        probe = run.probe(route, r1, snapshot.releases, chat, request, f"req-{i}")
        assert probe is not None and run.in_flight == 1
        probe.abandon()  # the primary failed before its handler ever waited
        for _ in range(5):  # the task is cancelled at its first step, its callbacks run next
            await asyncio.sleep(0)
        assert run.in_flight == 0
    assert "model-two" not in (await fake(sut, "GET", "/_control/stats"))["models"]


@pytest.mark.parametrize("half_close", [True, False])
async def test_a_cut_stream_is_charged_what_the_provider_sent(
    budgeted: tuple[SidecarUnderTest, Ledger],  # noqa: F811 - the imported fixture
    monkeypatch: pytest.MonkeyPatch,
    half_close: bool,
) -> None:
    """Plain HTTP: the sidecar half-closes and reads all the provider wrote until it stopped.
    TLS cannot half-close (``hang_up`` says no): the sidecar reads until the provider pauses,
    exact for a provider whose tokens come further apart than that pause (10 ms)."""
    sut, ledger = budgeted
    if not half_close:
        monkeypatch.setattr("sidecar.pipeline.proxy.hang_up", lambda _response: False)
    put_budget(sut, tokens=100_000)
    await fake(
        sut, "PUT", "/_control/models/model-one", {"token_interval_ms": 40, "completion_tokens": 50}
    )
    await hang_up(sut, stream=True, after_lines=10)  # the role chunk, then 4 tokens
    m = await settled(ledger)
    stats = await upstream_idle(sut, "model-one")
    assert stats["streams_cancelled"] == 1 and 3 <= stats["completion_tokens"] < 50
    assert m.tally.spent == m.tally.estimated == PROMPT + stats["completion_tokens"]
