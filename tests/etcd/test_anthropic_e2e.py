"""Anthropic releases end to end through real processes (etcd, configsvc, sidecar, fake LLM)
with the anthropic SDK as the agent: ``release create --provider anthropic``, the refusals of a
route or migration that mixes provider kinds, canary and pins by Claude Code's session header,
an operator migration, a session budget, and etcd down."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import pytest

from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import (
    AGENT,
    KEY_VAR,
    Stack,
    get_json,
    stable_is,
    start_stack,
    wait_for,
)

pytestmark = pytest.mark.etcd
FAST = ("--budget-report-interval", "0.2")
SESSION_HEADER = "X-Claude-Code-Session-Id"


@pytest.fixture
def stack(tmp_path: Path, fresh_etcd: EtcdNode, etcd_env: str) -> Iterator[Stack]:
    s = start_stack(tmp_path, etcd_env, [fresh_etcd.client_url])
    s.create_releases(("r1", "model-one"))
    s.set_stable("r1")
    for name, model in (("a1", "claude-one"), ("a2", "claude-two")):
        s.ctl(
            "release", "create", AGENT, name, "--provider", "anthropic", "--model", model,
            "--base-url", f"{s.fake.url}/v1", "--api-key-env", KEY_VAR,
            "--api-version", "2023-06-01",
        )  # fmt: skip
    yield s
    s.stop()


@pytest.fixture
async def agents() -> AsyncIterator[dict[str, anthropic.AsyncAnthropic]]:
    made: dict[str, anthropic.AsyncAnthropic] = {}
    yield made
    for client in made.values():
        await client.close()


async def served(
    agents: dict[str, anthropic.AsyncAnthropic], url: str, session: str, **extra: Any
) -> tuple[str, dict[str, str]]:
    key = f"{url} {session}"
    if key not in agents:
        agents[key] = anthropic.AsyncAnthropic(
            base_url=url,
            api_key="agent-key",
            max_retries=0,
            default_headers={SESSION_HEADER: session},
        )
    raw = await agents[key].messages.with_raw_response.create(
        model=AGENT, max_tokens=extra.pop("max_tokens", 32),
        messages=[{"role": "user", "content": f"hello from {session}"}], **extra,
    )  # fmt: skip
    await raw.parse()
    return raw.headers["x-holdfast-release"], dict(raw.headers)


def refused(stack: Stack, *args: str) -> str:
    result = stack.ctl("--json", *args, check=False)
    assert result.returncode == 1, result
    return str(json.loads(result.stdout)["error"]["code"])


async def test_anthropic_route_canary_pins_migration_and_budget(
    stack: Stack, fresh_etcd: EtcdNode, agents: dict[str, anthropic.AsyncAnthropic]
) -> None:
    shown = json.loads(stack.ctl("--json", "release", "show", AGENT, "a1").stdout)["release"]
    assert shown["provider"] == "anthropic" and shown["api_version"] == "2023-06-01"
    assert "provider:     anthropic" in stack.ctl("release", "show", AGENT, "a1").stdout
    # the route's stable is an openai release: anthropic ones are refused beside it
    assert refused(stack, "route", "set-stable", AGENT, "a1") == "provider_mismatch"
    assert refused(stack, "canary", "set", AGENT, "a1", "--percent", "10") == "provider_mismatch"
    assert refused(stack, "shadow", "set", AGENT, "a1", "--percent", "10") == "provider_mismatch"
    stack.ctl("route", "set-stable", AGENT, "a1", "--allow-provider-change", "--reason", "claude")
    assert refused(stack, "canary", "set", AGENT, "r1", "--percent", "10") == "provider_mismatch"
    stack.ctl("canary", "set", AGENT, "a2", "--percent", "50")
    history = json.loads(stack.ctl("--json", "history", "--agent", AGENT).stdout)
    assert any(e["action"] == "canary.set" for e in history["entries"])

    side = stack.start_sidecar([fresh_etcd.client_url], args=FAST)
    await wait_for(f"{side.url}/status", stable_is("a1"))
    sessions = [f"cc-{i:02d}" for i in range(16)]
    first = {s: (await served(agents, side.url, s))[0] for s in sessions}
    assert set(Counter(first.values())) == {"a1", "a2"}, first
    # a route change moves no running conversation
    stack.ctl("canary", "clear", AGENT)
    for s in sessions:
        assert (await served(agents, side.url, s, stream=False))[0] == first[s]
    on_a2 = [s for s in sessions if first[s] == "a2"]
    # an operator migration, announced to the agent; one across provider kinds is refused
    assert refused(stack, "pins", "migrate", AGENT, "--from", "a2", "--to", "r1") == (
        "provider_mismatch"
    )
    stack.ctl("pins", "migrate", AGENT, "--from", "a2", "--to", "a1")
    for _ in range(100):  # the sidecar's watch brings the moved pins
        release, headers = await served(agents, side.url, on_a2[0])
        if release == "a1":
            break
        await asyncio.sleep(0.05)
    assert release == "a1" and headers.get("x-holdfast-migrated-from") == "a2"

    # a session budget: reserved from max_tokens, refused in Anthropic's shape
    stack.ctl("budget", "set", "session:cc-budget", "--tokens", "600", "--window", "day")
    await wait_for(
        f"{side.url}/status",
        lambda b: any(
            s["scope"] == "session:cc-budget" for s in (b.get("budgets") or {}).get("scopes", [])
        ),
    )
    with pytest.raises(anthropic.RateLimitError) as info:
        await served(agents, side.url, "cc-budget", max_tokens=4000)
    body = info.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["code"] == "budget_exhausted"
    release, _ = await served(agents, side.url, "cc-budget", max_tokens=100)
    _, status = await get_json(f"{side.url}/status")
    (scope,) = [s for s in status["budgets"]["scopes"] if s["scope"] == "session:cc-budget"]
    assert int(scope["spent"]) > 12  # the prompt as reported, and the 12 output tokens

    # etcd down: the last-known configuration keeps serving, pins included
    fresh_etcd.pause()
    try:
        for s in sessions[:4]:
            expected = "a1" if s in on_a2 else first[s]
            assert (await served(agents, side.url, s, stream=False))[0] == expected
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"{side.url}/v1/messages",
                json={"model": AGENT, "max_tokens": 8, "stream": True,
                      "messages": [{"role": "user", "content": "x"}]},
                headers={SESSION_HEADER: "cc-outage", "anthropic-version": "2023-06-01"},
            ) as resp:  # fmt: skip
                assert resp.status == 200
                assert (await resp.read()).rstrip().endswith(b'"message_stop"}')
    finally:
        fresh_etcd.resume()
