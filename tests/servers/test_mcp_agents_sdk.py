"""Tier 2: the OpenAI Agents SDK's ``MCPServerStreamableHttp`` pointed at the sidecar: the model
(the fake upstream, chat completions) calls the MCP tool, the agent runs it through the sidecar
against a real MCP server built with the official SDK, under the session's pinned contract."""

from __future__ import annotations

from agents import Agent, OpenAIChatCompletionsModel, Runner
from agents.mcp import MCPServerStreamableHttp
from openai import AsyncOpenAI

from holdfast_devtools import procs
from tests.servers.conftest import PROVIDER_KEY
from tests.servers.mcp_stack import TOOLSET, live_tool, mcp_backend, mcp_sidecar


async def test_agents_sdk_completes_a_tool_round_trip(fakellm: procs.ManagedProcess) -> None:
    async with mcp_backend() as backend, mcp_sidecar(fakellm.url) as sidecar:
        sidecar.contract("search", "1.0.0", await live_tool(backend.url, "search"), backend.url)
        sidecar.release("r1", {"search": "1.0.0"}, {TOOLSET: [backend.url]})
        sidecar.stable("r1")
        server = MCPServerStreamableHttp(
            {"url": sidecar.mcp_url(), "headers": {"X-Holdfast-Session": "agent-run-1"}},
            cache_tools_list=False,
        )
        model = OpenAIChatCompletionsModel(
            model="gpt-fake",
            openai_client=AsyncOpenAI(base_url=f"{fakellm.url}/v1", api_key=PROVIDER_KEY),
        )
        agent = Agent(
            name="docs", instructions="Use the tools.", model=model, mcp_servers=[server],
            tool_use_behavior="stop_on_first_tool",
        )  # fmt: skip
        async with server:
            result = await Runner.run(agent, "call:search for the pins page")
        assert len(backend.calls) == 1  # the model's call reached the backend through the sidecar
        call = backend.calls[0]
        hit = f"{call['query']}:{call['lang']}:0"
        assert hit in str(result.final_output)  # the backend's answer, back to the agent
        stats = sidecar.metrics.contracts.stats()
        assert [(s["release"], s["tool"], s["calls"]) for s in stats] == [("r1", "search", 1)]
