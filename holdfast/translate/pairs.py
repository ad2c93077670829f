"""The registry: which agent dialect reaches which provider kind, natively or through which
translation, and what each translation refuses. Pure.

A pair is one direction (the agent's dialect -> the dialect the provider serves): the agent's
request read into the neutral conversation and written for the provider, the provider's answer
(whole or streamed) read and written for the agent. Adding a pair is one entry in ``PAIRS``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from holdfast.providers import PROVIDERS
from holdfast.translate import chat, features, messages, responses
from holdfast.translate.neutral import Conversation, Event, Reply, Segment


class Reader(Protocol):
    """A provider's stream, neutral (``chat.StreamReader``, ``messages.StreamReader``)."""

    def read(self, obj: dict[str, Any] | None) -> list[Event]:
        """One parsed event (None: a stream's end marker that carries no JSON)."""
        ...


class Writer(Protocol):
    """Neutral events for the agent (``chat.StreamWriter``...)."""

    def write(self, event: Event) -> list[Segment]: ...


@dataclass(frozen=True, slots=True)
class Pair:
    agent: str  # the agent's dialect (holdfast.dialects name)
    provider: str  # the dialect the provider serves
    refuses: frozenset[str]  # features (holdfast.translate.features) it cannot carry
    read_request: Callable[[dict[str, Any]], Conversation]
    write_request: Callable[[Conversation, str], dict[str, Any]]  # (conversation, base_url)
    read_answer: Callable[[object], Reply]
    write_answer: Callable[[Reply, dict[str, Any]], dict[str, Any]]  # (reply, agent's body)
    reader: Callable[[], Reader]
    writer: Callable[[dict[str, Any]], Writer]  # (agent's body) -> its stream's writer
    read_error: Callable[[object], tuple[str, str]]

    @property
    def name(self) -> str:
        return f"{self.agent}->{self.provider}"


def _all_but_info(catalogue: tuple[features.Feature, ...], *keep: str) -> frozenset[str]:
    """Every feature of a catalogue but the informational ones and ``keep``."""
    informational = {features.TOOLS.name, features.STREAM.name}
    return frozenset(f.name for f in catalogue if f.name not in informational | set(keep))


def _chat_writer(body: dict[str, Any]) -> chat.StreamWriter:
    options = body.get("stream_options")
    return chat.StreamWriter(
        usage=isinstance(options, dict) and options.get("include_usage") is True
    )


def _messages_writer(body: dict[str, Any]) -> messages.StreamWriter:
    return messages.StreamWriter()


def _to_messages(conv: Conversation, base_url: str) -> dict[str, Any]:
    return messages.write_request(conv)


def _chat_answer(reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
    return chat.write_answer(reply)


def _messages_answer(reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
    return messages.write_answer(reply)


PAIRS: Final = (
    Pair(
        agent="openai.chat",
        provider="anthropic.messages",
        refuses=_all_but_info(features.CHAT),
        read_request=chat.read_request,
        write_request=_to_messages,
        read_answer=messages.read_answer,
        write_answer=_chat_answer,
        reader=messages.StreamReader,
        writer=_chat_writer,
        read_error=messages.read_error,
    ),
    Pair(
        agent="anthropic.messages",
        provider="openai.chat",
        refuses=_all_but_info(features.MESSAGES),
        read_request=messages.read_request,
        write_request=chat.write_request,
        read_answer=chat.read_answer,
        write_answer=_messages_answer,
        reader=chat.StreamReader,
        writer=_messages_writer,
        read_error=chat.read_error,
    ),
    Pair(
        agent="openai.responses",
        provider="openai.chat",
        # chat completions have a reasoning effort, JSON formats and temperatures up to 2
        refuses=_all_but_info(
            features.RESPONSES, "reasoning_effort", "json_format", "temperature_high"
        ),
        read_request=responses.read_request,
        write_request=chat.write_request,
        read_answer=chat.read_answer,
        write_answer=responses.write_answer,
        reader=chat.StreamReader,
        writer=responses.StreamWriter,
        read_error=chat.read_error,
    ),
    Pair(
        agent="openai.responses",
        provider="anthropic.messages",
        refuses=_all_but_info(features.RESPONSES),
        read_request=responses.read_request,
        write_request=_to_messages,
        read_answer=messages.read_answer,
        write_answer=responses.write_answer,
        reader=messages.StreamReader,
        writer=responses.StreamWriter,
        read_error=messages.read_error,
    ),
)


def natively(dialect: str, kind: str) -> bool:
    """``kind``'s providers serve ``dialect`` as the agent speaks it."""
    entry = PROVIDERS.get(kind)
    return entry is not None and dialect in entry.serves


def pair_for(dialect: str, kind: str) -> Pair | None:
    """The translation that carries ``dialect`` to ``kind``'s providers (None: natively served,
    or not at all)."""
    entry = PROVIDERS.get(kind)
    if entry is None or dialect in entry.serves:
        return None
    return next((p for p in PAIRS if p.agent == dialect and p.provider in entry.serves), None)


def serves(dialect: str, kind: str) -> bool:
    return natively(dialect, kind) or pair_for(dialect, kind) is not None


def kinds_serving(dialect: str) -> frozenset[str]:
    """Every provider kind that can serve ``dialect``, natively or translated."""
    return frozenset(kind for kind in PROVIDERS if serves(dialect, kind))


BY_NAME: Final[Mapping[str, Pair]] = {p.name: p for p in PAIRS}
