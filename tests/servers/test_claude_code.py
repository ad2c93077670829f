"""Claude Code itself (npm ``@anthropic-ai/claude-code``, pinned in tests/e2e/claude) as the agent:
``claude -p`` headless, pointed at the sidecar with ``ANTHROPIC_BASE_URL`` and a dummy
``ANTHROPIC_API_KEY`` (the sidecar holds the provider key), completes turns, tool round trip
included, through the real sidecar app and the real fake upstream.

What it sends, checked here: ``POST /v1/messages?beta=true``, streamed, ``anthropic-beta`` with
its long list of flags, its own model names (mapped by a route alias, or replaced by
``ANTHROPIC_MODEL`` naming the logical model) and ``X-Claude-Code-Session-Id`` (the session).

The package is installed from the npm registry on first use (``npm ci``, a few seconds); without
node and npm the tests are skipped, saying so.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from holdfast_devtools import procs
from tests.servers.conftest import PROVIDER_KEY, SidecarUnderTest, start_sidecar
from tests.servers.npm_cli import npm_cli

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Keeps Claude Code to the one endpoint it is pointed at: no telemetry, error reports,
# auto-update or other calls home (none of which could reach anything here anyway).
OFFLINE = {
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
}


@pytest.fixture(scope="module")
def claude() -> Path:
    return npm_cli("claude", "claude", "Claude Code")


@pytest.fixture
async def sut(fakellm: procs.ManagedProcess) -> AsyncIterator[SidecarUnderTest]:
    async with aiohttp.ClientSession() as http:
        await http.post(f"{fakellm.url}/_control/reset")
    # Claude Code's system prompt and tool definitions run to tens of kilobytes a request.
    sidecar = await start_sidecar(fakellm.url, max_body_bytes=4 << 20)
    sidecar.add_release("a1", "claude-fake-1", provider="anthropic")
    sidecar.set_stable("a1", aliases=("claude-sonnet-4-5",))
    yield sidecar
    await sidecar.server.close()


async def run_claude(
    claude: Path, sut: SidecarUnderTest, tmp_path: Path, prompt: str, *args: str, **env: str
) -> str:
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),  # its settings and history, never the developer's
        "ANTHROPIC_BASE_URL": sut.url,
        "ANTHROPIC_API_KEY": "dummy-agent-key",
        **OFFLINE,
        **env,
    }
    proc = await asyncio.create_subprocess_exec(
        str(claude), "-p", prompt, *args,
        env=environ, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 90)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 0, (out.decode()[-2000:], err.decode()[-2000:])
    return out.decode()


async def provider_saw(fakellm: procs.ManagedProcess) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fakellm.url}/_control/requests?limit=100") as resp:
            rows: list[dict[str, Any]] = (await resp.json())["requests"]
    return rows


async def test_claude_code_completes_a_turn_with_the_logical_model(
    claude: Path, sut: SidecarUnderTest, fakellm: procs.ManagedProcess, tmp_path: Path
) -> None:
    out = await run_claude(
        claude, sut, tmp_path, "Say hello in one word", ANTHROPIC_MODEL="support"
    )
    assert "[claude-fake-1]" in out
    rows = await provider_saw(fakellm)
    assert rows and all(r["path"] == "/v1/messages" for r in rows)
    row = rows[-1]
    assert row["query"] == "beta=true" and row["body"]["stream"] is True
    assert row["model"] == "claude-fake-1"
    headers = row["headers"]
    assert headers["x-api-key"] == PROVIDER_KEY and "dummy-agent-key" not in str(row)
    assert "claude-code-" in headers["anthropic-beta"] and "," in headers["anthropic-beta"]
    assert headers["anthropic-version"]
    # the session is Claude Code's own id, from X-Claude-Code-Session-Id (metadata.user_id
    # holds a JSON object and would have been hashed to "u-...")
    ((session, entry),) = list(sut.pins.entries())
    assert UUID.fullmatch(session) and entry.pin.release == "a1"


async def test_claude_code_model_names_map_through_route_aliases(
    claude: Path, sut: SidecarUnderTest, fakellm: procs.ManagedProcess, tmp_path: Path
) -> None:
    out = await run_claude(
        claude, sut, tmp_path, "Say hello in one word", "--model", "claude-sonnet-4-5"
    )
    assert "[claude-fake-1]" in out
    assert (await provider_saw(fakellm))[-1]["model"] == "claude-fake-1"


async def test_claude_code_tool_round_trip_ends(
    claude: Path, sut: SidecarUnderTest, fakellm: procs.ManagedProcess, tmp_path: Path
) -> None:
    # "call:Read" makes the fake call Claude Code's Read tool; Claude Code runs it (the made-up
    # arguments fail) and sends the tool_result back, which the fake answers in text.
    out = await run_claude(claude, sut, tmp_path, "please call:Read now", ANTHROPIC_MODEL="support")
    assert "[claude-fake-1]" in out
    bodies = [r["body"] for r in await provider_saw(fakellm)]
    assert len(bodies) == 2
    last = bodies[1]["messages"][-1]
    assert last["role"] == "user" and last["content"][0]["type"] == "tool_result"
    call = bodies[1]["messages"][-2]["content"][-1]
    assert call["type"] == "tool_use" and call["name"] == "Read"
    assert len(list(sut.pins.entries())) == 1  # both turns, one session


async def test_claude_code_through_a_translated_openai_release(
    claude: Path, fakellm: procs.ManagedProcess, tmp_path: Path
) -> None:
    # A Claude Code fleet moved to a model of another provider (issue 25): its requests --
    # adaptive thinking shown to nobody, effort high, context edits that clear thinking, a
    # deferred tool, cache hints, beta flags -- are translated into chat completions, and the
    # tool round trip ends as it does on Anthropic's API.
    async with aiohttp.ClientSession() as http:
        await http.post(f"{fakellm.url}/_control/reset")
    sut = await start_sidecar(fakellm.url, max_body_bytes=4 << 20)
    try:
        sut.add_release("o1", "model-one")
        sut.set_stable("o1", aliases=("claude-sonnet-4-5",))
        out = await run_claude(
            claude, sut, tmp_path, "please call:Read now", ANTHROPIC_MODEL="support"
        )
        assert "[model-one]" in out
        rows = await provider_saw(fakellm)
        assert [r["path"] for r in rows] == ["/v1/chat/completions"] * 2
        assert all(r["query"] == "" and "anthropic-beta" not in r["headers"] for r in rows)
        first, second = (r["body"] for r in rows)
        assert first["stream"] is True and first["model"] == "model-one"
        names = [t["function"]["name"] for t in first["tools"]]
        assert "Read" in names and "Bash" in names
        assert first["messages"][0]["role"] == "system"
        call = second["messages"][-2]["tool_calls"][0]
        result = second["messages"][-1]
        assert call["function"]["name"] == "Read" and result["role"] == "tool"
        assert result["tool_call_id"] == call["id"]
        assert len(list(sut.pins.entries())) == 1  # both turns, one session
    finally:
        await sut.server.close()
