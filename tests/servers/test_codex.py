"""The Codex CLI itself (npm ``@openai/codex``, pinned in tests/e2e/codex) as the agent: ``codex
exec`` headless, with a model provider pointed at the sidecar (``wire_api = "responses"``),
holds a tool round trip through a translated release -- its OpenAI Responses requests
(``store: false``: stateless) carried into Anthropic Messages and into chat completions, the
streams back into the Responses events Codex reads (LiteLLM #29254 is a translated Responses
stream that broke Codex). What Codex asks for that another API cannot carry is refused in its own
error shape: its hosted web search, unless turned off.

The package is installed from the npm registry on first use (``npm ci``); without node and npm
the tests are skipped, saying so.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from holdfast_devtools import procs
from tests.servers.conftest import SidecarUnderTest, start_sidecar
from tests.servers.npm_cli import npm_cli

# Codex's own hosted web search and its multi-agent tool namespace are OpenAI-only tools; an
# operator moving Codex to another provider turns them off (the translation refuses them).
PORTABLE = ("-c", 'web_search="disabled"', "--disable", "multi_agent")


@pytest.fixture(scope="module")
def codex() -> Path:
    return npm_cli("codex", "codex", "the Codex CLI")


@pytest.fixture
async def sut(fakellm: procs.ManagedProcess) -> AsyncIterator[SidecarUnderTest]:
    async with aiohttp.ClientSession() as http:
        await http.post(f"{fakellm.url}/_control/reset")
    # Codex's instructions and tool definitions run to tens of kilobytes a request.
    sidecar = await start_sidecar(fakellm.url, max_body_bytes=4 << 20)
    sidecar.add_release("a1", "claude-one", provider="anthropic")
    sidecar.add_release("c1", "model-chat", provider="openai-chat")
    yield sidecar
    await sidecar.server.close()


async def run_codex(
    codex: Path, sut: SidecarUnderTest, tmp_path: Path, prompt: str, *args: str
) -> tuple[int, str]:
    home = tmp_path / "codex-home"
    home.mkdir(exist_ok=True)
    provider = (
        f'{{name="holdfast", base_url="{sut.url}/v1", env_key="AGENT_KEY", wire_api="responses"}}'
    )
    environ = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path),  # its settings and history, never the developer's
        "CODEX_HOME": str(home),
        "AGENT_KEY": "dummy-agent-key",  # the sidecar holds the provider's key
    }
    proc = await asyncio.create_subprocess_exec(
        str(codex), "exec", "--skip-git-repo-check",
        "-c", 'model_provider="holdfast"', "-c", f"model_providers.holdfast={provider}",
        "-c", 'model="support"', *args, prompt,
        env=environ, cwd=tmp_path, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 90)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def provider_saw(fakellm: procs.ManagedProcess) -> list[dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{fakellm.url}/_control/requests?limit=100") as resp:
            rows: list[dict[str, Any]] = (await resp.json())["requests"]
    return rows


@pytest.mark.parametrize(
    ("release", "path", "model"),
    [("a1", "/v1/messages", "claude-one"), ("c1", "/v1/chat/completions", "model-chat")],
)
async def test_codex_tool_round_trip_through_a_translated_release(
    codex: Path,
    sut: SidecarUnderTest,
    fakellm: procs.ManagedProcess,
    tmp_path: Path,
    release: str,
    path: str,
    model: str,
) -> None:
    sut.set_stable(release)
    # "call:exec_command" makes the fake call Codex's shell tool; Codex runs it (the made-up
    # arguments fail or not, either way a result) and sends its output back, answered in text.
    code, out = await run_codex(codex, sut, tmp_path, "please call:exec_command now", *PORTABLE)
    assert code == 0, out[-3000:]
    assert f"[{model}]" in out
    rows = await provider_saw(fakellm)
    assert [r["path"] for r in rows] == [path, path], out[-3000:]
    first, second = (r["body"] for r in rows)
    assert first["model"] == model and first["stream"] is True
    assert "store" not in first and "previous_response_id" not in first  # stateless
    if path == "/v1/messages":
        names = [t["name"] for t in first["tools"]]
        call, result = second["messages"][-2]["content"][-1], second["messages"][-1]["content"][0]
        assert call["type"] == "tool_use" and result["type"] == "tool_result"
        assert result["tool_use_id"] == call["id"] and call["name"] == "exec_command"
    else:
        names = [t["function"]["name"] for t in first["tools"]]
        call, result = second["messages"][-2]["tool_calls"][0], second["messages"][-1]
        assert result["role"] == "tool" and result["tool_call_id"] == call["id"]
        assert call["function"]["name"] == "exec_command"
    assert "exec_command" in names


async def test_codex_with_its_hosted_web_search_is_refused_in_its_own_shape(
    codex: Path, sut: SidecarUnderTest, fakellm: procs.ManagedProcess, tmp_path: Path
) -> None:
    sut.set_stable("a1")
    code, out = await run_codex(codex, sut, tmp_path, "hello", "-c", 'web_search="live"')
    assert code != 0
    assert "untranslatable" in out or "built-in tools" in out, out[-3000:]
    assert await provider_saw(fakellm) == []  # nothing was sent
