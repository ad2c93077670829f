"""The demo's agent: workers holding multi-turn conversations through the sidecar in the three
APIs agents speak, and the report of which release served which conversation.

Each conversation is a session (``X-Holdfast-Session``) of several turns, every other request
streamed, through the real client libraries: OpenAI chat completions and the Responses API (a
``previous_response_id`` chain) with the ``openai`` SDK, Anthropic Messages with the
``anthropic`` SDK. The report proves the promise: a conversation keeps its release from first
turn to last unless an operator migrated it (and then the sidecar said so with
``X-Holdfast-Migrated-From``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anthropic
import openai
from anthropic.types import MessageParam
from openai.types.chat import ChatCompletionMessageParam

TURNS = 6
STAGGER_S = 0.25
THINK_S = 0.4  # the agent "thinks" between turns, so conversations outlive operator commands


@dataclass
class Turn:
    at: float
    release: str
    ok: bool
    migrated_from: str = ""
    error: str = ""


@dataclass
class Conversation:
    session: str
    started: float
    dialect: str = "chat"
    turns: list[Turn] = field(default_factory=list)


def _failed(at: float, exc: Exception) -> Turn:
    served = "-"
    response = getattr(exc, "response", None)  # an API status error: the sidecar says which
    if response is not None:
        served = response.headers.get("x-holdfast-release", "-")
    return Turn(at, served, ok=False, error=f"{type(exc).__name__}: {exc}")


def _served(at: float, headers: object) -> Turn:
    get = getattr(headers, "get", lambda _name, default: default)
    return Turn(
        at,
        get("x-holdfast-release", "?"),
        ok=True,
        migrated_from=get("x-holdfast-migrated-from", ""),
    )


def say(text: str) -> None:
    print(text, flush=True)


async def converse(
    client: openai.AsyncOpenAI, agent: str, session: str, t0: float, log: list[Conversation]
) -> None:
    """Chat completions: the whole conversation sent each turn."""
    convo = Conversation(session, time.monotonic() - t0, "chat")
    log.append(convo)
    messages: list[ChatCompletionMessageParam] = []
    completions = client.chat.completions.with_raw_response
    for turn in range(TURNS):
        messages.append({"role": "user", "content": f"{session}, turn {turn}: status update?"})
        at = time.monotonic() - t0
        headers = {"X-Holdfast-Session": session}
        try:
            if turn % 2:
                streamed = await completions.create(
                    model=agent, messages=messages, stream=True, extra_headers=headers
                )
                raw_headers, text = streamed.headers, ""
                async for chunk in streamed.parse():
                    if chunk.choices and chunk.choices[0].delta.content:
                        text += chunk.choices[0].delta.content
            else:
                plain = await completions.create(
                    model=agent, messages=messages, extra_headers=headers
                )
                raw_headers = plain.headers
                text = plain.parse().choices[0].message.content or ""
            convo.turns.append(_served(at, raw_headers))
            messages.append({"role": "assistant", "content": text})
        except openai.OpenAIError as exc:
            convo.turns.append(_failed(at, exc))
        await asyncio.sleep(THINK_S)


async def converse_responses(
    client: openai.AsyncOpenAI, agent: str, session: str, t0: float, log: list[Conversation]
) -> None:
    """The Responses API: only the new turn sent, the conversation held by the provider that
    issued ``previous_response_id`` (the sidecar routes the chain back to it)."""
    convo = Conversation(session, time.monotonic() - t0, "responses")
    log.append(convo)
    previous: str | None = None
    raw_create = client.responses.with_raw_response.create
    for turn in range(TURNS):
        at = time.monotonic() - t0
        text = f"{session}, turn {turn}: status update?"
        headers = {"X-Holdfast-Session": session}
        try:
            if turn % 2:
                streamed = await raw_create(
                    model=agent, input=text, previous_response_id=previous, stream=True,
                    extra_headers=headers,
                )  # fmt: skip
                raw_headers = streamed.headers
                async for event in streamed.parse():
                    if event.type == "response.completed":
                        previous = event.response.id
            else:
                plain = await raw_create(
                    model=agent, input=text, previous_response_id=previous, extra_headers=headers
                )
                raw_headers, previous = plain.headers, plain.parse().id
            convo.turns.append(_served(at, raw_headers))
        except openai.OpenAIError as exc:
            convo.turns.append(_failed(at, exc))
        await asyncio.sleep(THINK_S)


async def converse_messages(
    client: anthropic.AsyncAnthropic, agent: str, session: str, t0: float, log: list[Conversation]
) -> None:
    """Anthropic Messages, as Claude Code and the Claude Agent SDK speak it."""
    convo = Conversation(session, time.monotonic() - t0, "messages")
    log.append(convo)
    messages: list[MessageParam] = []
    raw_create = client.messages.with_raw_response.create
    for turn in range(TURNS):
        messages.append({"role": "user", "content": f"{session}, turn {turn}: status update?"})
        at = time.monotonic() - t0
        headers = {"X-Holdfast-Session": session}
        try:
            if turn % 2:
                streamed = await raw_create(
                    model=agent, max_tokens=64, messages=messages, stream=True,
                    extra_headers=headers,
                )  # fmt: skip
                raw_headers, text = streamed.headers, ""
                async for event in await streamed.parse():
                    if event.type == "content_block_delta" and event.delta.type == "text_delta":
                        text += event.delta.text
            else:
                plain = await raw_create(
                    model=agent, max_tokens=64, messages=messages, extra_headers=headers
                )
                raw_headers = plain.headers
                blocks = (await plain.parse()).content
                text = "".join(b.text for b in blocks if b.type == "text")
            convo.turns.append(_served(at, raw_headers))
            messages.append({"role": "assistant", "content": text})
        except anthropic.APIError as exc:
            convo.turns.append(_failed(at, exc))
        await asyncio.sleep(THINK_S)


Converse = Callable[[str, float, list[Conversation]], Awaitable[None]]


async def worker(converse_one: Converse, number: int, t0: float, stop_at: float,
                 log: list[Conversation]) -> None:  # fmt: skip
    count = 0
    await asyncio.sleep(number * STAGGER_S)  # conversations start and end at different times
    while time.monotonic() < stop_at:
        count += 1
        await converse_one(f"w{number}-c{count:03d}", t0, log)


def report(
    log: list[Conversation], marks: list[tuple[float, str]], *, bad: tuple[str, float] | None = None
) -> int:
    """Print what happened; 0 when it kept its promises. ``bad``: a release whose provider was
    broken on purpose at that time -- its failed turns are the incident, every other one a bug."""
    say("\nNew conversations per second, by the release they were given:")
    by_second: dict[int, Counter[str]] = {}
    for c in log:
        if c.turns and c.turns[0].ok:
            by_second.setdefault(int(c.started), Counter())[c.turns[0].release] += 1
    for second in sorted(by_second):
        counts = ", ".join(f"{rel}={n}" for rel, n in sorted(by_second[second].items()))
        say(f"  t={second:2d}s  {counts}")
    for at, what in marks:
        say(f"  [{at:5.2f}s] {what}")
    turns = [t for c in log for t in c.turns]
    failures = [t for t in turns if not t.ok]
    expected = [
        t for t in failures if bad is not None and (t.release, True) == (bad[0], t.at >= bad[1])
    ]
    flipped, migrated = [], []
    for c in log:
        served = [t for t in c.turns if t.ok]  # a failed turn was served by nothing
        changes = [i for i in range(1, len(served)) if served[i].release != served[i - 1].release]
        told = all(served[i].migrated_from == served[i - 1].release for i in changes)
        if changes and told:
            migrated.append(c)
        elif changes:
            flipped.append(c)
    dialects = Counter(c.dialect for c in log)
    say(
        f"\nConversations: {len(log)} ("
        + ", ".join(f"{n} {d}" for d, n in sorted(dialects.items()))
        + f"), turns: {len(turns)}, failed turns: {len(failures)}"
        f"\nConversations that changed release on their own: {len(flipped)}"
        f"\nConversations moved by a migration (and told so): {len(migrated)}"
    )
    if bad is not None:
        say(
            f"Failed turns on {bad[0]} after its provider broke at {bad[1]:.1f}s, before the "
            f"rollback moved its conversations: {len(expected)}; any other failure: "
            f"{len(failures) - len(expected)}"
        )
    # one example per release the migrations moved conversations away from
    examples = {next(t.migrated_from for t in c.turns if t.migrated_from): c for c in migrated}
    for c in list(examples.values())[:3]:
        path = " → ".join(
            t.release + (f" (told: from {t.migrated_from})" if t.migrated_from else "")
            for t in c.turns
        )
        say(f"  {c.session}: {path}")
    for f in [t for t in failures if t not in expected][:5]:
        say(f"  failed at {f.at:5.2f}s: {f.error}")
    ok = len(failures) == len(expected) and not flipped and len({t.release for t in turns}) >= 2
    return 0 if ok else 1
