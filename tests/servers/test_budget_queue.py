"""Requests that wait for budget, on the real sidecar app against the real fake upstream: served
once a reservation in flight settles, refused with ``budget_busy`` when the wait runs out or the
queue is full, gone from the queue when the agent hangs up, and a cap lowered to what is left."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from holdfast.dialects import openai_chat
from holdfast_devtools import procs
from sidecar.budgets.filter import BudgetFilter, BudgetOptions
from sidecar.budgets.ledger import Ledger
from sidecar.budgets.metrics import BudgetMetrics
from sidecar.budgets.queue import AdmissionQueue
from sidecar.config.state import ConfigState
from sidecar.ops.metrics import SidecarMetrics
from tests.servers import conftest
from tests.servers.conftest import AGENT, SidecarUnderTest
from tests.servers.test_budget_filter import MESSAGES, SESSION, fake, put_budget, settled, spend_to

PROMPT = openai_chat.DIALECT.parse({"model": AGENT, "messages": MESSAGES}).prompt_estimate("bytes")
CAP = 40
WORST = PROMPT + CAP


async def start(
    fakellm: procs.ManagedProcess, *, max_waiting: int = 100
) -> tuple[SidecarUnderTest, Ledger, AdmissionQueue]:
    async with aiohttp.ClientSession() as http:
        await http.post(f"{fakellm.url}/_control/reset")
    ledger = Ledger(agent=AGENT)
    queue = AdmissionQueue(ledger, max_waiting=max_waiting, max_bytes=1 << 20)

    def budget(config: ConfigState, metrics: SidecarMetrics) -> BudgetFilter:
        options = BudgetOptions(agent=AGENT, default_cap=64, estimator="bytes")
        return BudgetFilter(
            ledger, config, options, BudgetMetrics(metrics.registry, AGENT, ledger), queue=queue
        )

    sut = await conftest.start_sidecar(fakellm.url, budget=budget)
    sut.add_release("r1", "model-one")
    sut.set_stable("r1")
    return sut, ledger, queue


@pytest.fixture
async def queued(
    fakellm: procs.ManagedProcess,
) -> AsyncIterator[tuple[SidecarUnderTest, Ledger, AdmissionQueue]]:
    sut, ledger, queue = await start(fakellm)
    yield sut, ledger, queue
    await sut.server.close()


async def ask(
    sut: SidecarUnderTest, *, timeout: float | None = None, **body: Any
) -> tuple[int, dict[str, Any], dict[str, str], float]:
    payload = {"model": AGENT, "messages": MESSAGES, "max_tokens": CAP, **body}
    started = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as http:
        async with http.post(
            f"{sut.url}/v1/chat/completions", json=payload, headers={"X-Holdfast-Session": SESSION}
        ) as resp:
            answer = await resp.json()
            return resp.status, answer, dict(resp.headers), time.monotonic() - started


def in_flight(ledger: Ledger) -> int:
    meter = ledger.meters.get(f"session:{SESSION}")
    return meter.tally.reserved if meter is not None else 0


async def until(check: Any, what: str) -> None:
    for _ in range(300):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"never happened: {what}")


async def test_a_request_waits_for_one_in_flight_and_is_served_once_it_settles(
    queued: tuple[SidecarUnderTest, Ledger, AdmissionQueue],
) -> None:
    sut, ledger, queue = queued
    put_budget(sut, tokens=WORST + 30)  # one worst case fits; two do not, two answers do
    await fake(sut, "PUT", "/_control/models/model-one", {"latency_ms": 400})
    first = asyncio.create_task(ask(sut))
    await until(lambda: in_flight(ledger), "first in flight")
    second = asyncio.create_task(ask(sut))
    await until(lambda: queue.waiting == 1, "second waiting")
    (s1, a1, _, t1), (s2, a2, _, t2) = await asyncio.gather(first, second)
    assert (s1, s2) == (200, 200), (a1, a2)
    assert t2 > t1  # it went out after the first answer settled
    m = await settled(ledger)
    assert m.tally.spent == a1["usage"]["total_tokens"] + a2["usage"]["total_tokens"]
    assert m.tally.spent <= WORST + 30 and m.tally.waits == 1 and queue.waiting == 0
    status = (await fake(sut, "GET", "/_control/stats"))["models"]["model-one"]
    assert status["requests"] == 2


async def test_the_wait_runs_out_into_budget_busy_and_a_spent_budget_refuses_at_once(
    queued: tuple[SidecarUnderTest, Ledger, AdmissionQueue],
) -> None:
    sut, ledger, queue = queued
    put_budget(sut, tokens=WORST + 30, queue_timeout=0.3)
    await fake(sut, "PUT", "/_control/models/model-one", {"latency_ms": 1500})
    first = asyncio.create_task(ask(sut))
    await until(lambda: in_flight(ledger), "first in flight")
    status, answer, headers, waited = await ask(sut)
    assert status == 429 and answer["error"]["code"] == "budget_busy", answer
    assert headers["X-Holdfast-Budget-Refusal"] == "could_not_wait"
    assert headers["Retry-After"] == "1" and answer["error"]["param"] == f"session:{SESSION}"
    assert "wait ran out" in answer["error"]["message"]
    assert 0.3 <= waited < 1.2, waited  # never longer than its limit (plus the round trip)
    assert (await first)[0] == 200
    spend_to(await settled(ledger), WORST + 30 - 5)  # as if the window were used up
    status, answer, headers, waited = await ask(sut)
    assert status == 429 and answer["error"]["code"] == "budget_exhausted"
    assert headers["X-Holdfast-Budget-Refusal"] == "spent" and waited < 0.3
    assert queue.waiting == 0
    m = ledger.meters[f"session:{SESSION}"]
    assert (m.tally.refused, m.tally.refused_wait) == (2, 1)


async def test_an_agent_that_hangs_up_leaves_the_queue_and_its_place_goes_to_the_next(
    queued: tuple[SidecarUnderTest, Ledger, AdmissionQueue],
) -> None:
    sut, ledger, queue = queued
    put_budget(sut, tokens=WORST + 30)
    await fake(sut, "PUT", "/_control/models/model-one", {"latency_ms": 800})
    first = asyncio.create_task(ask(sut))
    await until(lambda: in_flight(ledger), "first in flight")
    with pytest.raises(TimeoutError):
        await ask(sut, timeout=0.2)  # waits, then the agent goes away
    await until(lambda: queue.waiting == 0, "the queue forgets the agent that left")
    assert in_flight(ledger) == WORST  # only the first's
    third = await ask(sut)
    assert third[0] == 200 and (await first)[0] == 200
    stats = (await fake(sut, "GET", "/_control/stats"))["models"]["model-one"]
    assert stats["requests"] == 2  # the one that hung up never went out


async def test_a_full_queue_refuses_at_once(fakellm: procs.ManagedProcess) -> None:
    sut, ledger, queue = await start(fakellm, max_waiting=1)
    try:
        put_budget(sut, tokens=WORST + 30)
        await fake(sut, "PUT", "/_control/models/model-one", {"latency_ms": 600})
        first = asyncio.create_task(ask(sut))
        await until(lambda: in_flight(ledger), "in flight")
        second = asyncio.create_task(ask(sut))
        await until(lambda: queue.waiting == 1, "second waiting")
        status, answer, _, waited = await ask(sut)
        assert status == 429 and answer["error"]["code"] == "budget_busy"
        assert "queue is full" in answer["error"]["message"] and waited < 0.5
        assert [r[0] for r in await asyncio.gather(first, second)] == [200, 200]
    finally:
        await sut.server.close()


async def test_fit_cap_lowers_the_cap_to_what_is_left(
    queued: tuple[SidecarUnderTest, Ledger, AdmissionQueue],
) -> None:
    sut, ledger, _ = queued
    put_budget(sut, tokens=1000, fit_cap=8)
    status, _, _, _ = await ask(sut)  # syncs the budget
    assert status == 200
    m = await settled(ledger)
    spend_to(m, 1000 - (PROMPT + 20))
    status, answer, headers, _ = await ask(sut, max_tokens=100)
    assert status == 200, answer
    assert headers["X-Holdfast-Budget-Fitted"] == "20"
    sent = (await fake(sut, "GET", "/_control/requests"))["requests"][-1]["body"]
    assert sent["max_tokens"] == 20
    m = await settled(ledger)
    assert m.tally.spent <= 1000
    status, answer, _, _ = await ask(sut, max_tokens=100)
    left = 1000 - m.tally.spent
    if left - PROMPT < 8:  # below the fit cap: the budget is spent for this request
        assert status == 429 and answer["error"]["code"] == "budget_exhausted"
