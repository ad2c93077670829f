"""Tier 2: session pinning through the real HTTP app; etcd refuses, so every pin write queues."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from openai import AsyncOpenAI

from holdfast import bucketing
from holdfast.keyspace import Release
from holdfast.keyspace.prompt import PromptVersion
from tests.servers.conftest import AGENT, KEY_VAR, KS, SidecarUnderTest

Json = dict[str, Any]


async def chat(
    sut: SidecarUnderTest, *, session: str | None = None, user: str | None = None
) -> tuple[int, dict[str, str], Json]:
    body: Json = {"model": AGENT, "messages": [{"role": "user", "content": "hello"}]}
    if user is not None:
        body["user"] = user
    headers = {"X-Holdfast-Session": session} if session is not None else {}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sut.url}/v1/chat/completions", json=body, headers=headers) as resp:
            return resp.status, dict(resp.headers), await resp.json()


async def test_first_request_pins_and_later_ones_keep_the_release(
    sidecar: SidecarUnderTest,
) -> None:
    client = AsyncOpenAI(base_url=f"{sidecar.url}/v1", api_key="unused", max_retries=0)
    first = await client.chat.completions.with_raw_response.create(
        model=AGENT,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"X-Holdfast-Session": "conv-1"},
    )
    assert first.headers["X-Holdfast-Release"] == "r1"
    entry = sidecar.pins.get("conv-1")
    assert entry is not None and entry.pin.release == "r1" and entry.pending
    assert sidecar.pin_writer.pending == 1  # etcd refuses: the create waits in the queue

    sidecar.set_stable("r2")
    again = await client.chat.completions.with_raw_response.create(
        model=AGENT,
        messages=[{"role": "user", "content": "and again"}],
        extra_headers={"X-Holdfast-Session": "conv-1"},
    )
    assert again.headers["X-Holdfast-Release"] == "r1"
    assert again.parse().choices[0].message.content.startswith("[model-one]")  # type: ignore[union-attr]
    fresh = await client.chat.completions.with_raw_response.create(
        model=AGENT,
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"X-Holdfast-Session": "conv-2"},
    )
    assert fresh.headers["X-Holdfast-Release"] == "r2"
    await client.close()


async def test_user_field_is_the_session_and_no_session_is_unpinned(
    sidecar: SidecarUnderTest,
) -> None:
    status, headers, _ = await chat(sidecar, user="Jane Doe <jane@example.com>")
    assert status == 200 and headers["X-Holdfast-Release"] == "r1"
    assert next(s for s, _ in sidecar.pins.entries()).startswith("u-")
    status, headers, _ = await chat(sidecar)
    assert status == 200 and headers["X-Holdfast-Release"] == "r1"
    sidecar.set_stable("r2")
    _, headers, _ = await chat(sidecar)
    assert headers["X-Holdfast-Release"] == "r2"  # unpinned follows the route
    _, headers, _ = await chat(sidecar, user="Jane Doe <jane@example.com>")
    assert headers["X-Holdfast-Release"] == "r1"  # the hashed user is the same session
    assert len(sidecar.pins) == 1

    async with aiohttp.ClientSession() as http:
        metrics = await (await http.get(f"{sidecar.url}/metrics")).text()
        status_body = await (await http.get(f"{sidecar.url}/status")).json()
    assert f'holdfast_session_routing_total{{agent="{AGENT}",kind="new",release="r1"}} 1.0' in (
        metrics
    )
    assert 'kind="unpinned",release="r2"} 1.0' in metrics
    assert 'kind="pinned",release="r1"} 1.0' in metrics
    assert "holdfast_pins_cached 1.0" in metrics
    pins = status_body["pins"]
    assert pins["cached"] == 1 and pins["pending"] == 1 and pins["ttl_s"] == 86400
    assert pins["oldest_pending_age_s"] is not None


async def test_bad_session_header_is_400_naming_it(sidecar: SidecarUnderTest) -> None:
    status, _, body = await chat(sidecar, session="has spaces/and slash")
    assert status == 400
    assert body["error"]["code"] == "invalid_request"
    assert body["error"]["param"] == "X-Holdfast-Session"
    assert len(sidecar.pins) == 0


async def test_canary_share_of_new_sessions_follows_the_hash(sidecar: SidecarUnderTest) -> None:
    sidecar.set_stable("r1", canary="r2", percent=30)
    served = {}
    for i in range(40):
        _, headers, _ = await chat(sidecar, session=f"c-{i}")
        served[f"c-{i}"] = headers["X-Holdfast-Release"]
    for sid, release in served.items():
        expected = "r2" if bucketing.selected(bucketing.CANARY, AGENT, sid, 30) else "r1"
        assert release == expected, sid
    sidecar.set_stable("r1")  # canary cleared: pinned canary sessions stay on it
    for sid, release in served.items():
        _, headers, _ = await chat(sidecar, session=sid)
        assert headers["X-Holdfast-Release"] == release


@pytest.mark.parametrize("max_pending", [3])
async def test_queue_is_bounded_and_sessions_stay_consistent(
    fakellm: Any, max_pending: int
) -> None:
    from tests.servers.conftest import start_sidecar

    sut = await start_sidecar(fakellm.url, max_pending_pins=max_pending)
    try:
        sut.add_release("r1", "model-one")
        sut.set_stable("r1")
        for i in range(6):
            assert (await chat(sut, session=f"q-{i}"))[0] == 200
        assert sut.pin_writer.pending == max_pending
        assert sut.pin_writer.dropped == 3
        sut.add_release("r2", "model-two")
        sut.set_stable("r2")
        for i in range(6):  # dropped writes never unpin a session in this sidecar
            assert (await chat(sut, session=f"q-{i}"))[1]["X-Holdfast-Release"] == "r1"
    finally:
        await sut.server.close()


def put_prompt(sut: SidecarUnderTest, version: str, status: str) -> None:
    text = f"You are support agent v{version}."
    record = PromptVersion(name="support", version=version, text=text, status=status)  # type: ignore[arg-type]
    sut._put(KS.prompt("support", version), record.encode())


async def prompt_version(sut: SidecarUnderTest, session: str) -> str:
    body: Json = {
        "model": AGENT,
        "messages": [
            {"role": "system", "content": "@prompt:support"},
            {"role": "user", "content": "hello"},
        ],
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{sut.url}/v1/chat/completions", json=body, headers={"X-Holdfast-Session": session}
        ) as resp:
            assert resp.status == 200, await resp.text()
            return resp.headers["X-Holdfast-Prompt-Version"]


async def test_a_prompt_version_is_recorded_at_first_use_not_only_at_the_first_turn(
    sidecar: SidecarUnderTest,
) -> None:
    release = Release(
        agent=AGENT,
        name="p1",
        model="model-one",
        base_url=f"{sidecar.fake_url}/v1",
        api_key_env=KEY_VAR,
        prompts={"support": "active"},
    )
    sidecar._put(KS.release(AGENT, "p1"), release.encode())
    sidecar.set_stable("p1")
    put_prompt(sidecar, "1", "draft")
    assert (await chat(sidecar, session="early"))[0] == 200  # no version active yet
    put_prompt(sidecar, "1", "active")
    assert await prompt_version(sidecar, "early") == "support@1"
    put_prompt(sidecar, "1", "deprecated")
    put_prompt(sidecar, "2", "active")
    assert await prompt_version(sidecar, "early") == "support@1"  # never switches mid-way
    assert await prompt_version(sidecar, "later") == "support@2"
    entry = sidecar.pins.get("early")
    assert entry is not None and entry.pin.prompts == {"support": "1"} and entry.pending
