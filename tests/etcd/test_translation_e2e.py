"""Issue 25's acceptance test: a canary rollout from an OpenAI-API release to an Anthropic-API
release, and back, under live load -- real etcd, real configsvc (its rollout controller), two
real sidecar processes, the fake upstream serving both APIs. The agents are the real client
libraries: the openai SDK (chat completions, streamed or not, with tools) and the anthropic SDK
(whole and streamed, with tools), each conversation a multi-turn tool loop that hops between
the sidecars. No turn may fail, and no conversation may change release on its own: each is
served, translated or not, by the release its first turn got.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import pytest
from openai import AsyncOpenAI
from openai.lib.streaming.chat import ChatCompletionStreamState

from holdfast_devtools import procs
from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import AGENT, KEY_VAR, Stack, get_json, start_stack

pytestmark = pytest.mark.etcd

LOOPS = 10  # conversations in flight at any time
SIDECAR_ARGS = ("--pin-create-timeout", "5", "--health-interval", "0.5")
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
CHAT_TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}
]
CLAUDE_TOOLS: list[Any] = [{"name": "get_weather", "input_schema": WEATHER}]
NATIVE = {"openai": "o1", "anthropic": "a1"}  # the release each agent's API reaches untranslated


@dataclass
class Conversation:
    sid: str
    api: str  # "openai" | "anthropic"
    stream: bool
    releases: list[str] = field(default_factory=list)
    translated: list[str] = field(default_factory=list)
    phase: str = ""


@pytest.fixture
def stack(tmp_path: Path, etcd_node: EtcdNode, etcd_env: str) -> Iterator[Stack]:
    s = start_stack(tmp_path, etcd_env, [etcd_node.client_url], svc_args=("--rollout-tick", "0.1"))
    api = s.api()
    for name, model, kind in (("o1", "model-one", "openai"), ("a1", "claude-one", "anthropic")):
        api.create_release(
            AGENT,
            {"release": name, "model": model, "base_url": f"{s.fake.url}/v1",
             "api_key_env": KEY_VAR, "provider": kind},
        )  # fmt: skip
    s.set_stable("o1")
    yield s
    s.stop()


class Load:
    """Conversations, one after another in each of ``LOOPS`` loops, until stopped."""

    def __init__(self, sidecars: list[procs.ManagedProcess]) -> None:
        self.urls = [p.url for p in sidecars]
        self.conversations: list[Conversation] = []
        self.failures: list[str] = []
        self.phase = "before"
        self.stopping = asyncio.Event()
        self.numbers = itertools.count()
        self.openai = [AsyncOpenAI(base_url=f"{u}/v1", api_key="agent", max_retries=0)
                       for u in self.urls]  # fmt: skip
        self.claude = [anthropic.AsyncAnthropic(base_url=u, api_key="agent", max_retries=0)
                       for u in self.urls]  # fmt: skip

    async def close(self) -> None:
        for client in self.openai:
            await client.close()
        for claude in self.claude:
            await claude.close()

    async def loop(self) -> None:
        while not self.stopping.is_set():
            n = next(self.numbers)
            api = "anthropic" if n % 3 == 2 else "openai"
            conv = Conversation(f"conv-{n:05d}", api, stream=n % 2 == 0, phase=self.phase)
            self.conversations.append(conv)
            try:
                await (self._claude(conv) if api == "anthropic" else self._openai(conv))
            except Exception as exc:  # every failed turn is a finding, whatever it is
                where = "".join(traceback.format_exception(exc)[-3:])
                self.failures.append(
                    f"{conv.sid} ({api}, stream={conv.stream}, phase {conv.phase}, releases "
                    f"{conv.releases}, translated {conv.translated}): {exc!r}\n{where}"
                )

    def _seen(self, conv: Conversation, headers: Any) -> None:
        conv.releases.append(headers["x-holdfast-release"])
        conv.translated.append(headers.get("x-holdfast-translated", ""))

    async def _openai(self, conv: Conversation) -> None:
        history: list[Any] = [{"role": "user", "content": f"call:get_weather ({conv.sid})"}]
        for turn in range(3):
            client = self.openai[(turn + int(conv.sid[-2:])) % len(self.openai)]
            headers = {"X-Holdfast-Session": conv.sid}
            completion: Any
            if conv.stream:
                streamed = await client.chat.completions.with_raw_response.create(
                    model=AGENT, messages=history, tools=CHAT_TOOLS, stream=True,
                    extra_headers=headers,
                )  # fmt: skip
                state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
                async for chunk in streamed.parse():
                    list(state.handle_chunk(chunk))
                completion = state.get_final_completion()
                self._seen(conv, streamed.headers)
            else:
                raw = await client.chat.completions.with_raw_response.create(
                    model=AGENT, messages=history, tools=CHAT_TOOLS, extra_headers=headers
                )
                completion = raw.parse()
                self._seen(conv, raw.headers)
            message = completion.choices[0].message
            if turn == 0:
                calls = message.tool_calls or []
                assert [c.function.name for c in calls] == ["get_weather"], message
                history.append(message.model_dump(exclude_none=True))
                history += [{"role": "tool", "tool_call_id": c.id, "content": "sunny"}
                            for c in calls]  # fmt: skip
            else:
                assert message.content, message
                history += [{"role": "assistant", "content": message.content},
                            {"role": "user", "content": "and tomorrow?"}]  # fmt: skip

    async def _claude(self, conv: Conversation) -> None:
        history: list[Any] = [{"role": "user", "content": f"call:get_weather ({conv.sid})"}]
        for turn in range(3):
            client = self.claude[(turn + int(conv.sid[-2:])) % len(self.claude)]
            headers = {"X-Claude-Code-Session-Id": conv.sid}
            message: Any
            if conv.stream:
                async with client.messages.stream(
                    model=AGENT, max_tokens=128, messages=history, tools=CLAUDE_TOOLS,
                    extra_headers=headers,
                ) as events:  # fmt: skip
                    message = await events.get_final_message()
                self._seen(conv, events.response.headers)
            else:
                raw = await client.messages.with_raw_response.create(
                    model=AGENT, max_tokens=128, messages=history, tools=CLAUDE_TOOLS,
                    extra_headers=headers,
                )  # fmt: skip
                message = await raw.parse()
                self._seen(conv, raw.headers)
            history.append({"role": "assistant", "content": message.content})
            if turn == 0:
                uses = [b for b in message.content if b.type == "tool_use"]
                assert [u.name for u in uses] == ["get_weather"], message
                history.append({"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": u.id, "content": "sunny"}
                    for u in uses]})  # fmt: skip
            else:
                assert message.content[0].type == "text", message
                history.append({"role": "user", "content": "and tomorrow?"})


async def rollout(stack: Stack, release: str, stable: str, load: Load, phase: str) -> None:
    """Run a rollout to ``release`` under the load, until it is the route's stable."""
    load.phase = phase
    await asyncio.to_thread(
        stack.ctl, "rollout", "start", AGENT, release, "--steps", "10,50,100", "--interval", "1s",
        "--reason", f"move to {release}",
    )  # fmt: skip
    for _ in range(300):
        route = json.loads(
            (await asyncio.to_thread(stack.ctl, "--json", "route", "show", AGENT)).stdout
        )
        if route["route"]["stable"] == release and route["route"]["rollout"]["state"] == "done":
            assert route["route"]["previous_stable"] == stable
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the rollout to {release} never finished: {route}")


async def test_rollout_from_an_openai_release_to_an_anthropic_one_and_back_under_load(
    stack: Stack, etcd_node: EtcdNode
) -> None:
    sidecars = stack.start_sidecars([etcd_node.client_url], ["side-a", "side-b"], args=SIDECAR_ARGS)
    load = Load(sidecars)
    loops = [asyncio.create_task(load.loop()) for _ in range(LOOPS)]
    try:
        await asyncio.sleep(2)  # conversations under way on the stable release
        await rollout(stack, "a1", "o1", load, "to-anthropic")
        load.phase = "anthropic"
        await asyncio.sleep(2)
        await rollout(stack, "o1", "a1", load, "back-to-openai")
        load.phase = "after"
        await asyncio.sleep(2)
    finally:
        load.stopping.set()
        await asyncio.gather(*loops)
        await load.close()

    assert load.failures == [], load.failures[:5]  # 0 failed turns
    done = [c for c in load.conversations if len(c.releases) == 3]
    assert len(done) > 100, len(done)
    # 0 conversations changing release on their own: every turn at its first turn's release
    moved = [c.sid for c in done if len(set(c.releases)) != 1]
    assert moved == [], moved[:5]
    # every conversation through a release of the other API went translated, and only those
    for c in done:
        expected = "" if c.releases[0] == NATIVE[c.api] else "translated"
        assert {"translated" if t else "" for t in c.translated} == {expected}, c
    # both directions carried real load: each API's agents on each release
    served = {(c.api, c.releases[0]) for c in done}
    assert served == {("openai", "o1"), ("openai", "a1"), ("anthropic", "o1"),
                      ("anthropic", "a1")}  # fmt: skip
    for phase in ("to-anthropic", "back-to-openai"):
        during = {c.releases[0] for c in done if c.phase == phase}
        assert during == {"o1", "a1"}, (phase, during)  # the canary and its stable, side by side
    assert {c.releases[0] for c in done if c.phase == "anthropic"} == {"a1"}
    assert {c.releases[0] for c in done if c.phase == "after"} == {"o1"}
    # health signals per release, translated or not, as for any release
    _, status = await get_json(f"{sidecars[0].url}/status")
    releases = status["signals"]["releases"]
    assert releases["a1"]["requests"] > 0 and releases["o1"]["requests"] > 0
