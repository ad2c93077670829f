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
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, Final

from holdfast.dialects.base import (
    NO_EVENT,
    Answer,
    DeclaredTool,
    ErrorKind,
    Estimator,
    EventView,
    RequestRefused,
    SystemSlot,
    ToolCall,
    Usage,
    checked_usage,
)
from holdfast.dialects.sse import data_event, sse_data
from holdfast.dialects.tool_calls import MAX_ARGUMENT_BYTES, CallAssembler
from holdfast.json_limits import provider_json

NAME: Final = "anthropic.messages"
COUNT_NAME: Final = "anthropic.count_tokens"
PROVIDER: Final = "anthropic"
SESSION_HEADER: Final = "X-Claude-Code-Session-Id"
PER_MESSAGE: Final = 4
REPLY_PRIMING: Final = 3
PROMPT_USAGE: Final = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
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


# -- requests --------------------------------------------------------------------------------


def _blocks_text(content: object) -> list[str]:
    """The text a content value carries: a string, or its blocks' ``text``, tool inputs and
    tool results (whose content is itself a string or blocks)."""
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if isinstance(text := block.get("text"), str):
            out.append(text)
        elif block.get("type") == "tool_use" and "input" in block:
            out.append(json.dumps(block["input"], ensure_ascii=False))
        elif block.get("type") == "tool_result":
            out.extend(_blocks_text(block.get("content")))
    return out


def _chars(content: object) -> int:
    return sum(len(t) for t in _blocks_text(content))


def _refuse_unless(ok: bool, message: str, param: str) -> None:
    if not ok:
        raise RequestRefused(message, param)


def validate(body: dict[str, Any], *, needs_cap: bool) -> None:
    """What the Messages API requires of a request, refused before anything is forwarded."""
    model = body.get("model")
    _refuse_unless(
        isinstance(model, str) and bool(model), "'model' is required and must be a string", "model"
    )
    messages = body.get("messages")
    _refuse_unless(
        isinstance(messages, list), "'messages' is required and must be an array", "messages"
    )
    assert isinstance(messages, list)
    for i, message in enumerate(messages):
        _refuse_unless(
            isinstance(message, dict) and isinstance(message.get("role"), str),
            f"messages[{i}] must be an object with a role",
            f"messages.{i}.role",
        )
        _refuse_unless(
            isinstance(message.get("content"), str | list),
            f"messages[{i}].content must be a string or an array of content blocks",
            f"messages.{i}.content",
        )
    if needs_cap or "max_tokens" in body:
        cap = body.get("max_tokens")
        _refuse_unless(
            isinstance(cap, int) and not isinstance(cap, bool) and cap >= 1,
            "'max_tokens' is required and must be a positive integer",
            "max_tokens",
        )
    system = body.get("system")
    _refuse_unless(
        system is None
        or isinstance(system, str)
        or (isinstance(system, list) and all(isinstance(b, dict) for b in system)),
        "'system' must be a string or an array of text blocks",
        "system",
    )
    tools = body.get("tools")
    _refuse_unless(
        tools is None
        or (
            isinstance(tools, list)
            and all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in tools)
        ),
        "'tools' must be an array of tools, each with a 'name'",
        "tools",
    )
    stream = body.get("stream")
    _refuse_unless(
        stream is None or isinstance(stream, bool), "'stream' must be a boolean", "stream"
    )
    metadata = body.get("metadata")
    _refuse_unless(
        metadata is None
        or (isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str | None)),
        "'metadata' must be an object whose user_id is a string",
        "metadata",
    )


class MessagesRequest:
    __slots__ = ("body",)

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    @property
    def model(self) -> str:
        return str(self.body["model"])

    def set_model(self, model: str) -> None:
        self.body["model"] = model

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True

    @property
    def session_hint(self) -> str | None:
        metadata = self.body.get("metadata")
        user = metadata.get("user_id") if isinstance(metadata, dict) else None
        return user if isinstance(user, str) and user else None

    def output_cap(self) -> tuple[int | None, int]:
        cap = self.body.get("max_tokens")
        if cap is None:
            return None, 1
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise RequestRefused("'max_tokens' must be a positive integer", "max_tokens")
        return cap, 1

    def write_output_cap(self, cap: int, base_url: str) -> str:
        self.body["max_tokens"] = cap
        return "max_tokens"

    def ask_stream_usage(self) -> bool:
        return True  # message_start and message_delta always carry it

    def _messages(self) -> list[Any]:
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []

    def prompt_estimate(self, estimator: Estimator) -> int:
        system, tools = self.body.get("system"), self.body.get("tools")
        if estimator == "bytes":
            parts = [system, self.body.get("messages", []), tools]
            return len(
                json.dumps(parts, ensure_ascii=False, separators=(",", ":")).encode(
                    "utf-8", "surrogatepass"
                )
            )
        messages = self._messages()
        chars = _chars(system) + self.text_chars()
        chars += len(json.dumps(tools)) if tools else 0
        return math.ceil(chars / 4) + PER_MESSAGE * len(messages) + REPLY_PRIMING

    def text_chars(self) -> int:
        return sum(_chars(m.get("content")) for m in self._messages() if isinstance(m, dict))

    def last_user_text(self, limit: int) -> str:
        for message in reversed(self._messages()):
            if not isinstance(message, dict) or message.get("role") != "user":
                continue
            content = message.get("content")
            if isinstance(content, str):
                return content[:limit]
            blocks = content if isinstance(content, list) else []
            texts = [
                b["text"]
                for b in blocks
                if isinstance(b, dict)
                and b.get("type") == "text"
                and isinstance(b.get("text"), str)
            ]
            return "\n".join(texts)[:limit]
        return ""

    def declared_tools(self) -> list[DeclaredTool]:
        tools = self.body.get("tools")
        out: list[DeclaredTool] = []
        for tool in tools if isinstance(tools, list) else ():
            # Server tools (web search, code execution...) carry a versioned type and no
            # schema: the provider runs them, no contract applies.
            if not isinstance(tool, dict) or tool.get("type", "custom") != "custom":
                continue
            if isinstance(name := tool.get("name"), str):
                out.append(DeclaredTool(name, tool.get("input_schema", {}), _setter(tool)))
        return out

    @property
    def system_field(self) -> str:
        return "system"

    def system_slots(self) -> list[SystemSlot]:
        system = self.body.get("system")
        if isinstance(system, str):
            return [SystemSlot(0, system, "system")]
        return [
            SystemSlot(i, block["text"], f"system[{i}]")
            for i, block in enumerate(system if isinstance(system, list) else ())
            if isinstance(block, dict)
            and block.get("type") == "text"
            and isinstance(block.get("text"), str)
        ]

    def set_system(self, position: int, text: str) -> None:
        system = self.body.get("system")
        if isinstance(system, list):
            system[position] = {**system[position], "text": text}  # cache_control stays
        else:
            self.body["system"] = text

    def insert_system(self, text: str) -> None:
        system = self.body.get("system")
        first = {"type": "text", "text": text}
        if system is None or system == "":
            self.body["system"] = text
        elif isinstance(system, str):
            self.body["system"] = [first, {"type": "text", "text": system}]
        elif isinstance(system, list):
            system.insert(0, first)
        else:
            raise RequestRefused("'system' must be a string or an array of text blocks", "system")

    def shadow_copy(self, model: str) -> dict[str, Any]:
        return {**self.body, "model": model, "stream": False}


class CountRequest(MessagesRequest):
    """A ``count_tokens`` request: a Messages request that generates nothing."""

    __slots__ = ()

    @property
    def stream(self) -> bool:
        return False

    def output_cap(self) -> tuple[int | None, int]:
        return None, 1

    def write_output_cap(self, cap: int, base_url: str) -> str:
        raise RequestRefused("count_tokens takes no output cap")


def _setter(tool: dict[str, Any]) -> Callable[[Any], None]:
    def replace(schema: Any) -> None:
        tool["input_schema"] = schema

    return replace


# -- answers ---------------------------------------------------------------------------------


def _count_ok(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def usage_of(usage: object, where: str) -> Usage | None:
    """The prompt (input plus cache writes and reads) and output of a ``usage`` object; a count
    that is not a whole number is passed on as it is, for ``checked_usage`` to refuse."""
    if not isinstance(usage, dict):
        return None
    output = usage.get("output_tokens")
    if usage.get("input_tokens") is None and output is None:
        return None
    parts = [usage.get(name) for name in PROMPT_USAGE]
    bad = next((p for p in parts if p is not None and not _count_ok(p)), None)
    prompt = bad if bad is not None else sum(p for p in parts if isinstance(p, int))
    return checked_usage(prompt, output, where)


def _arguments(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def decode_body(body: bytes) -> Answer | None:
    obj = provider_json(body, "anthropic.messages.body")
    if not isinstance(obj, dict) or obj.get("type") != "message":
        return None
    content = obj.get("content")
    if not isinstance(content, list):
        return None
    texts: list[str] = []
    calls: list[ToolCall] = []
    chars = 0
    for i, block in enumerate(content):
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(text := block.get("text"), str):
            texts.append(text)
            chars += len(text)
        elif kind == "tool_use":
            name = block.get("name")
            arguments = _arguments(block.get("input", {}))
            calls.append(ToolCall(0, i, name if isinstance(name, str) else "", arguments))
            chars += len(arguments)
        elif kind == "thinking" and isinstance(thinking := block.get("thinking"), str):
            chars += len(thinking)
    usage = usage_of(obj.get("usage"), "anthropic.messages.body")
    refusal = obj.get("stop_reason") == "refusal"
    return Answer("".join(texts), tuple(calls), usage, refusal, math.ceil(chars / 4))


def decode_count(body: bytes) -> Answer | None:
    """``{"input_tokens": N}``: nothing generated, and counting is free (usage 0)."""
    obj = provider_json(body, "anthropic.count_tokens.body")
    if not isinstance(obj, dict) or not isinstance(obj.get("input_tokens"), int):
        return None
    return Answer("", (), Usage(0, 0), False, 0, choices=0)


class MessagesStream:
    """Decodes the named events of one streamed message; tool calls assembled per content
    block from their ``input_json_delta`` fragments, complete at ``content_block_stop``."""

    __slots__ = ("_calls", "_chars", "_final", "_output", "_prompt", "_started")

    def __init__(self, max_argument_bytes: int = MAX_ARGUMENT_BYTES) -> None:
        self._calls = CallAssembler(max_argument_bytes)
        self._prompt: int | None = None  # None until message_start told it
        self._output = 0  # as the provider last reported it
        self._chars = 0  # of the text, tool input and thinking streamed so far
        self._final = False  # message_delta reported the output: no estimate any more
        self._started = False  # an event of this API arrived (message_start, ping, error)

    @property
    def open_calls(self) -> list[str]:
        return self._calls.open_names

    def finish(self) -> list[ToolCall]:
        return self._calls.finish()

    def _usage(self) -> Usage | None:
        if self._prompt is None:
            return None
        output = self._output if self._final else max(self._output, math.ceil(self._chars / 4))
        return Usage(self._prompt, output)

    def _report(self, usage: object) -> None:
        """Fold a usage object of message_start or message_delta into what is known."""
        if not isinstance(usage, dict):
            return
        known = usage_of(usage, "anthropic.messages.event")
        if known is None:
            return
        if usage.get("input_tokens") is not None or self._prompt is None:
            self._prompt = known.prompt
        if usage.get("output_tokens") is not None:
            self._output = known.completion

    def feed(self, event: bytes) -> EventView:
        data = sse_data(event)
        if data is None or not data.lstrip().startswith(b"{"):
            return NO_EVENT
        obj = provider_json(data, "anthropic.messages.event")
        if not isinstance(obj, dict):
            return NO_EVENT
        kind = obj.get("type")
        if not self._started:
            # A Messages stream opens with message_start (a ping or an error may come first);
            # anything else first is another API's stream (OpenAI's chunks have no "type").
            if kind not in ("message_start", "ping", "error"):
                return EventView(foreign=True)
            self._started = True
        if kind == "content_block_delta":
            return self._delta(obj)
        if kind == "content_block_start":
            return self._start(obj)
        if kind == "content_block_stop":
            index = obj.get("index")
            calls = self._calls.end_call(0, index) if isinstance(index, int) else []
            return EventView(calls=calls) if calls else NO_EVENT
        if kind == "message_start":
            message = obj.get("message")
            if isinstance(message, dict):
                self._report(message.get("usage"))
            return EventView(usage=self._usage())
        if kind == "message_delta":
            delta = obj.get("delta")
            usage = obj.get("usage")
            if isinstance(usage, dict) and usage.get("output_tokens") is not None:
                self._final = True
            self._report(usage)
            refusal = isinstance(delta, dict) and delta.get("stop_reason") == "refusal"
            return EventView(usage=self._usage(), refusal=refusal)
        if kind == "message_stop":
            return EventView(done=True, calls=self._calls.finish())
        if kind == "error":
            return EventView(error=True)
        return NO_EVENT  # ping, and event types this module does not know yet

    def _start(self, obj: dict[str, Any]) -> EventView:
        block = obj.get("content_block")
        index = obj.get("index")
        if not isinstance(block, dict) or not isinstance(index, int):
            return NO_EVENT
        kind = block.get("type")
        if kind == "tool_use":
            name, call_id = block.get("name"), block.get("id")
            given = block.get("input")
            # The input streams as input_json_delta fragments after an empty object; a provider
            # that sends it whole here instead has it taken as the call's arguments.
            arguments = _arguments(given) if isinstance(given, dict) and given else ""
            self._calls.fragment(
                0,
                index,
                call_id if isinstance(call_id, str) else "",
                name if isinstance(name, str) else "",
                arguments,
            )
            self._chars += len(arguments)
            return EventView(content=1, usage=self._usage())
        if kind == "text" and isinstance(text := block.get("text"), str) and text:
            self._chars += len(text)
            return EventView(text=text, content=1, usage=self._usage())
        return NO_EVENT

    def _delta(self, obj: dict[str, Any]) -> EventView:
        delta = obj.get("delta")
        if not isinstance(delta, dict):
            return NO_EVENT
        kind = delta.get("type")
        if kind == "text_delta" and isinstance(text := delta.get("text"), str):
            self._chars += len(text)
            return EventView(text=text, content=1, usage=self._usage())
        if kind == "input_json_delta" and isinstance(part := delta.get("partial_json"), str):
            index = obj.get("index")
            if isinstance(index, int):
                self._calls.fragment(0, index, "", "", part)
            self._chars += len(part)
            return EventView(content=1, usage=self._usage())
        if kind == "thinking_delta" and isinstance(thinking := delta.get("thinking"), str):
            self._chars += len(thinking)
            return EventView(content=1, usage=self._usage())
        return NO_EVENT  # signature_delta, citations_delta: no tokens of their own to count


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
