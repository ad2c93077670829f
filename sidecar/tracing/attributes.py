"""Span names and attributes of model and tool calls. Pure: no I/O, no OpenTelemetry import.

The OpenTelemetry GenAI semantic conventions name what they cover: the span is
``{gen_ai.operation.name} {gen_ai.request.model}`` (``chat gpt-4o-mini``, ``execute_tool
lookup``), with ``gen_ai.provider.name`` (and the older ``gen_ai.system`` that many backends
still group by), request and response model, usage, finish reasons and ``gen_ai.conversation.id``
(the Holdfast session). Holdfast's own decisions are ``holdfast.*``. Prompts, answers and tool
arguments are never recorded: a trace is as widely read as a log.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

from holdfast.dialects import Answer, EventView
from sidecar.tracing.spans import AttributeValue

OPERATION: Final = "gen_ai.operation.name"
PROVIDER: Final = "gen_ai.provider.name"
SYSTEM: Final = "gen_ai.system"  # the name before gen_ai.provider.name; backends still use it
REQUEST_MODEL: Final = "gen_ai.request.model"
REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
REQUEST_CHOICES: Final = "gen_ai.request.choice.count"
RESPONSE_MODEL: Final = "gen_ai.response.model"
RESPONSE_ID: Final = "gen_ai.response.id"
FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
CONVERSATION: Final = "gen_ai.conversation.id"
TOOL_NAME: Final = "gen_ai.tool.name"
TOOL_TYPE: Final = "gen_ai.tool.type"
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
HTTP_STATUS: Final = "http.response.status_code"
ERROR_TYPE: Final = "error.type"

EXECUTE_TOOL: Final = "execute_tool"
# The sidecar calls a tool's backend on the agent's behalf, over HTTP: an "extension" in the
# conventions' words (a tool the agent side executes by calling an external API).
TOOL_KIND: Final = "extension"
MAX_LIST: Final = 32  # tool names, finish reasons, contracts: bounded like everything else


def span_name(operation: str, model: str) -> str:
    return f"{operation} {model}" if model else operation


@functools.lru_cache(maxsize=256)  # a fleet's few providers and backends, parsed once each
def _server(base_url: str) -> tuple[tuple[str, AttributeValue], ...]:
    return tuple(_parse_server(base_url).items())


def server_of(base_url: str) -> dict[str, AttributeValue]:
    """``server.address`` and ``server.port`` of a provider or backend URL."""
    return dict(_server(base_url))


def _parse_server(base_url: str) -> dict[str, AttributeValue]:
    parts = urlsplit(base_url)
    out: dict[str, AttributeValue] = {}
    if parts.hostname:
        out[SERVER_ADDRESS] = parts.hostname
        try:
            port = parts.port
        except ValueError:
            port = None
        out[SERVER_PORT] = port or (443 if parts.scheme == "https" else 80)
    return out


class AnswerFacts:
    """What a span keeps of an answer, whole or streamed, from the neutral views."""

    __slots__ = ("finish_reasons", "input_tokens", "output_tokens", "response_id",
                 "response_model", "tool_calls")  # fmt: skip

    def __init__(self) -> None:
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self.finish_reasons: list[str] = []
        self.response_model = ""
        self.response_id = ""
        self.tool_calls: list[str] = []

    def answer(self, answer: Answer) -> None:
        if answer.usage is not None:
            self.input_tokens, self.output_tokens = answer.usage.prompt, answer.usage.completion
        self.finish_reasons.extend(answer.finish_reasons[:MAX_LIST])
        self.response_model, self.response_id = answer.response_model, answer.response_id
        self.tool_calls.extend(c.name for c in answer.tool_calls[:MAX_LIST])

    def event(self, view: EventView) -> None:
        if view.usage is not None:
            self.input_tokens, self.output_tokens = view.usage.prompt, view.usage.completion
        if view.finish_reasons and len(self.finish_reasons) < MAX_LIST:
            self.finish_reasons.extend(view.finish_reasons)
        if view.response_model:
            self.response_model = view.response_model
        if view.response_id:
            self.response_id = view.response_id
        if view.calls and len(self.tool_calls) < MAX_LIST:
            self.tool_calls.extend(c.name for c in view.calls)

    def calls(self, names: list[str]) -> None:
        room = MAX_LIST - len(self.tool_calls)
        if room > 0:
            self.tool_calls.extend(names[:room])

    def attributes(self) -> dict[str, AttributeValue]:
        out: dict[str, AttributeValue] = {}
        if self.input_tokens is not None:
            out[INPUT_TOKENS] = self.input_tokens
        if self.output_tokens is not None:
            out[OUTPUT_TOKENS] = self.output_tokens
        if self.finish_reasons:
            out[FINISH_REASONS] = self.finish_reasons[:MAX_LIST]
        if self.response_model:
            out[RESPONSE_MODEL] = self.response_model
        if self.response_id:
            out[RESPONSE_ID] = self.response_id
        if self.tool_calls:
            out["holdfast.tool_calls"] = self.tool_calls[:MAX_LIST]
        return out


def header_attributes(
    headers: Mapping[str, str], names: Mapping[str, str]
) -> dict[str, AttributeValue]:
    """``names`` maps a header to the attribute its value becomes, when the header is there."""
    return {attr: value for header, attr in names.items() if (value := headers.get(header))}
