"""Anthropic Messages (``POST /v1/messages``), plain and streamed, and its token count
(``POST /v1/messages/count_tokens``).

Requests: ``model``, ``messages`` (``user``/``assistant`` turns; content a string or blocks:
``text``, ``image``, ``tool_use``, ``tool_result``...; Claude Code also sends ``system`` turns,
so roles are the provider's to judge), ``system`` (a string or ``text`` blocks),
``tools`` (``{name, description, input_schema}``; server tools such as web search carry a
``type`` and no schema), ``max_tokens`` (required: the output cap, one choice), ``stream``,
``metadata.user_id`` as the session hint. Claude Code names its session in the
``X-Claude-Code-Session-Id`` header.

Answers: a ``message`` whose ``content`` blocks are ``text``, ``tool_use`` (``input`` an object),
``thinking``...; ``stop_reason`` (``refusal`` flags a refusal); ``usage`` with ``input_tokens``,
``cache_creation_input_tokens`` and ``cache_read_input_tokens`` (together the prompt) and
``output_tokens``. Streams are named events: ``message_start`` (the message head and the prompt's
usage), ``content_block_start``/``content_block_delta``/``content_block_stop`` per content index
(``text_delta``, ``input_json_delta`` fragments of a tool call's input, ``thinking_delta``,
``signature_delta``), ``message_delta`` (``stop_reason``, cumulative ``usage.output_tokens``),
``message_stop``, ``ping`` and an in-band ``error``. Every stream carries its usage: nothing needs
to be asked for.

A stream cut short never reaches ``message_delta``: from ``message_start`` on, each event's view
carries the usage known so far, the output counted as the larger of what the provider reported
and the streamed text, JSON and thinking at 4 characters a token -- so a cut stream is charged
what was produced, and a whole one exactly what the provider reported.

Prompt estimators: ``bytes`` is the UTF-8 size of the JSON of ``system``, ``messages`` and
``tools`` (an upper bound, as for OpenAI chat); ``chars`` is their text / 4, plus 4 per message
and 3 for the reply.

Errors: ``{"type": "error", "error": {"type", "message"}}`` with Anthropic's types
(``ERROR_TYPES``); Holdfast adds its own ``code`` (and ``param``) to the inner object.

This module is the two dialects (paths, operations, errors); the request view and its
validation live in ``anthropic_request``, answers and the stream decoder in
``anthropic_answers``.
"""

from __future__ import annotations

from typing import Any, Final

from holdfast.dialects.anthropic_answers import MessagesStream, decode_body, decode_count
from holdfast.dialects.anthropic_request import CountRequest, MessagesRequest, validate
from holdfast.dialects.base import Answer, ErrorKind
from holdfast.dialects.sse import data_event

NAME: Final = "anthropic.messages"
COUNT_NAME: Final = "anthropic.count_tokens"
PROVIDER: Final = "anthropic"
SESSION_HEADER: Final = "X-Claude-Code-Session-Id"
# Neutral kinds as Anthropic names them; codes that Anthropic has a type of its own for win.
ERROR_TYPES: Final[dict[str, str]] = {
    "invalid_request": "invalid_request_error",
    "not_found": "not_found_error",
    "quota": "rate_limit_error",
    "upstream": "api_error",
    "service": "api_error",
}
CODE_TYPES: Final[dict[str, str]] = {
    "request_too_large": "request_too_large",
    "overloaded": "overloaded_error",
    "shutting_down": "overloaded_error",
}


def error_type(kind: ErrorKind, code: str) -> str:
    return CODE_TYPES.get(code) or ERROR_TYPES[kind]


def error_body(
    message: str, kind: ErrorKind, code: str, param: str | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": error_type(kind, code), "message": message, "code": code}
    if param is not None:
        error["param"] = param
    return {"type": "error", "error": error}


def stream_error(message: str, kind: ErrorKind, code: str) -> bytes:
    return data_event(error_body(message, kind, code), event="error")


class _Anthropic:
    provider_api = PROVIDER
    sse_errors = True
    checks_answers = True
    session_headers: tuple[str, ...] = (SESSION_HEADER,)

    def stream_decoder(self) -> MessagesStream:
        return MessagesStream()

    def error_body(
        self, message: str, kind: ErrorKind, code: str, param: str | None = None
    ) -> dict[str, Any]:
        return error_body(message, kind, code, param)

    def stream_error(self, message: str, kind: ErrorKind, code: str) -> bytes:
        return stream_error(message, kind, code)


class Messages(_Anthropic):
    name = NAME
    operation = "chat"
    paths: tuple[str, ...] = ("/v1/messages",)
    upstream_path = "/messages"

    def parse(self, body: dict[str, Any]) -> MessagesRequest:
        validate(body, needs_cap=True)
        return MessagesRequest(body)

    def decode_body(self, body: bytes) -> Answer | None:
        return decode_body(body)


class CountTokens(_Anthropic):
    name = COUNT_NAME
    operation = "count_tokens"
    paths: tuple[str, ...] = ("/v1/messages/count_tokens",)
    upstream_path = "/messages/count_tokens"

    def parse(self, body: dict[str, Any]) -> CountRequest:
        validate(body, needs_cap=False)
        return CountRequest(body)

    def decode_body(self, body: bytes) -> Answer | None:
        return decode_count(body)


DIALECT: Final = Messages()
COUNT_DIALECT: Final = CountTokens()


__all__ = [
    "COUNT_DIALECT",
    "DIALECT",
    "CountRequest",
    "MessagesRequest",
    "MessagesStream",
    "error_body",
]
