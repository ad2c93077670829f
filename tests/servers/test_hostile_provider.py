"""A hostile provider body (deep nesting, huge ints, lone surrogates, NaN) through the real
sidecar with a filter that parses answers (budgets): never a 500, never a filter exception; the
body reaches the agent untouched and the refusal is counted."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from holdfast.json_limits import REFUSED
from sidecar.budgets.ledger import Ledger
from tests.servers.conftest import SidecarUnderTest
from tests.servers.test_budget_filter import (  # noqa: F401 - the fixture is used by name
    MESSAGES,
    SESSION,
    budgeted,
    fake,
    put_budget,
    settled,
)

HOSTILE = [
    '{"choices": ' + "[" * 100_000 + "]" * 100_000 + "}",
    '{"choices": [], "usage": {"completion_tokens": ' + "9" * 5000 + "}}",
    '{"choices": [{"message": {"content": "\\ud800"}}], "usage": {"completion_tokens": 3}}',
    '{"choices": [], "usage": {"completion_tokens": NaN}}',
]


@pytest.mark.parametrize("stream", [False, True])
async def test_hostile_provider_bodies_pass_through_without_errors(
    budgeted: tuple[SidecarUnderTest, Ledger],  # noqa: F811 - the imported fixture
    stream: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    sut, ledger = budgeted
    put_budget(sut, tokens=100_000, request_cap=32)
    async with aiohttp.ClientSession() as http:
        for raw in HOSTILE:
            await fake(sut, "PUT", "/_control/models/model-one", {"raw_body": raw})
            before = sum(REFUSED.values())
            payload = {"model": "support", "messages": MESSAGES, "stream": stream}
            headers = {"X-Holdfast-Session": SESSION}
            with caplog.at_level(logging.ERROR):
                async with http.post(
                    f"{sut.url}/v1/chat/completions", json=payload, headers=headers
                ) as resp:
                    body = await resp.read()
                    assert resp.status == 200, body[:300]
            if stream:
                assert raw.encode() in body and body.endswith(b"data: [DONE]\n\n")
            else:
                assert body == raw.encode()  # untouched
            m = await settled(ledger)
            assert m.tally.reserved == 0  # the reservation was settled (by estimate)
            assert sum(REFUSED.values()) > before, raw[:60]
        # the sidecar still serves normal answers
        await fake(sut, "PUT", "/_control/models/model-one", {"raw_body": ""})
        async with http.post(
            f"{sut.url}/v1/chat/completions",
            json={"model": "support", "messages": MESSAGES},
            headers={"X-Holdfast-Session": SESSION},
        ) as resp:
            assert resp.status == 200
            assert (await resp.json())["usage"]["completion_tokens"] > 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
