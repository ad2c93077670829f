"""OpenAI Responses chains across real sidecar processes and a real etcd: a chain hops sidecars
and keeps its release through `route set-stable`, an operator's `pins migrate` rebuilds it at
the new release, and while etcd is down the records queue, the ids each sidecar knows keep
their release, and an id a sidecar cannot know is a 503, never a guess."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from holdfast_devtools import procs
from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import AGENT, Stack, get_json, stable_is, start_stack, wait_for

pytestmark = pytest.mark.etcd

# Every lookup and first turn settled by etcd, whatever the machine's load (the default 0.25 s
# would make a hop to the other sidecar a matter of luck on a busy 2-core machine).
SIDECAR_ARGS = ("--pin-create-timeout", "5")


@pytest.fixture
def stack(tmp_path: Path, fresh_etcd: EtcdNode) -> Iterator[Stack]:
    s = start_stack(tmp_path, "responses", [fresh_etcd.client_url])
    s.create_releases(("r1", "model-one"), ("r2", "model-two"))
    s.set_stable("r1")
    yield s
    s.stop()


def sdk(sidecar: procs.ManagedProcess) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"{sidecar.url}/v1", api_key="unused", max_retries=0)


async def turn(
    sidecar: procs.ManagedProcess, text: str, previous: str | None = None
) -> tuple[str, str, dict[str, str]]:
    """(response id, the release that served it, the response headers, names in lower case)."""
    raw = await sdk(sidecar).responses.with_raw_response.create(
        model="support", input=text, previous_response_id=previous
    )
    answer = raw.parse()
    return (
        answer.id,
        raw.headers["X-Holdfast-Release"],
        {k.lower(): v for k, v in raw.headers.items()},
    )


async def last_responses_body(stack: Stack) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{stack.fake.url}/_control/requests?limit=20") as resp:
            rows = (await resp.json())["requests"]
    bodies = [r["body"] for r in rows if r["path"] == "/v1/responses" and r["method"] == "POST"]
    body: dict[str, Any] = bodies[-1]
    return body


async def test_chains_across_sidecars_route_changes_migration_and_etcd_down(
    stack: Stack, fresh_etcd: EtcdNode
) -> None:
    etcd = [fresh_etcd.client_url]
    a, b = stack.start_sidecars(etcd, ["a", "b"], args=SIDECAR_ARGS)

    # a chain that hops sidecars at once: b learns who issued a's id from etcd
    first, served, _ = await turn(a, "my order is late")
    assert served == "r1"
    second, served, _ = await turn(b, "it was #1234", first)
    assert served == "r1"

    # the route moves new sessions; the chain stays where its state is
    stack.ctl("route", "set-stable", AGENT, "r2", "--reason", "rollout")
    for sidecar in (a, b):
        await wait_for(f"{sidecar.url}/status", stable_is("r2"))
    third, served, _ = await turn(a, "any news?", second)
    assert served == "r1"
    _, served, _ = await turn(b, "a new conversation")
    assert served == "r2"

    # an operator moves the chain's session (named after its first response): rebuilt at r2
    pin = json.loads(stack.ctl("pins", "show", AGENT, first, "--json").stdout)
    assert pin["pin"]["release"] == "r1", pin
    stack.ctl("pins", "migrate", AGENT, "--from", "r1", "--to", "r2", "--session", first)
    deadline = time.monotonic() + 15
    while True:
        fourth, served, headers = await turn(b, "thanks", third)
        if served == "r2" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)  # the migration is still on its way to b's watch
    assert served == "r2" and headers["x-holdfast-migrated-from"] == "r1"
    body = await last_responses_body(stack)
    assert body["model"] == "model-two" and "previous_response_id" not in body
    assert "my order is late" in str(body["input"]) and "any news?" in str(body["input"])
    fifth, served, _ = await turn(a, "one more", fourth)
    assert served == "r2"  # natively at its new release from then on
    assert (await last_responses_body(stack))["previous_response_id"] == fourth

    # etcd down: every id a sidecar knows keeps its release; an unknown one is never guessed
    await wait_for(f"{b.url}/status", lambda s: s["pins"]["states"]["pending"] == 0)
    fresh_etcd.pause()
    try:
        sixth, served, _ = await turn(b, "still there?", fifth)
        assert served == "r2"
        lone, served, _ = await turn(a, "a chain born during the outage")
        assert served == "r2"
        _, served, _ = await turn(a, "and its second turn", lone)  # a's own table knows it
        assert served == "r2"
        with pytest.raises(openai.APIStatusError) as info:
            await turn(b, "b has never seen it", lone)
        assert info.value.status_code == 503
        error = info.value.body
        assert isinstance(error, dict) and error["code"] == "state_owner_unknown"
        _, status = await get_json(f"{a.url}/status")
        assert status["pins"]["states"]["pending"] >= 1  # queued for etcd
    finally:
        fresh_etcd.resume()
    # the queued record reaches etcd, and b learns it
    deadline = time.monotonic() + 20
    while True:
        try:
            _, served, _ = await turn(b, "now b knows", lone)
            break
        except openai.APIStatusError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    assert served == "r2"
    assert sixth.startswith("resp_")
