"""OpenAI chat completions (``POST /v1/chat/completions``), plain and streamed.

Requests: ``model``, ``messages`` (``system``/``user``/... roles; content a string or text
parts), ``tools`` (``{"type": "function", "function": {name, parameters}}``), the output cap in
``max_completion_tokens`` or the older ``max_tokens`` (times ``n`` choices), ``user`` as the
session hint, ``stream_options.include_usage`` to end a stream with usage.

Answers: ``choices[].message`` (``content``, ``refusal``, ``tool_calls``) and ``usage``
(``prompt_tokens``, ``completion_tokens``). Streams: ``data: {chat.completion.chunk}`` events
whose ``choices[].delta`` carries content and tool-call fragments keyed by ``index``, a
``finish_reason`` per choice, a usage-only chunk when asked, and ``data: [DONE]``.

Prompt estimators: ``bytes`` is the UTF-8 size of the JSON of the messages and tool
definitions (and of a ``response_format`` schema) -- BPE tokenizers never make a token of less
than one byte, and the JSON syntax around each message outweighs the few formatting tokens a
provider adds, so it is an upper bound. ``tokens`` (holdfast.dialects.estimate) counts, for a
model whose tokenizer ships offline, each message's text exactly and its other string fields
(role, name, tool call ids) too, plus ``PER_MESSAGE`` framing tokens per message and
``REPLY_PRIMING`` for the reply (OpenAI documents 3 and 3; one more per message is spare),
while tool definitions, response formats, non-text parts and other fields stay in bytes: an
upper bound too, about 4x closer for text. ``chars`` is the text's characters / 4, plus 4 per
message and 3 for the reply's priming (OpenAI's rule of thumb): closer, but it can be short
for text that tokenizes badly.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

from holdfast.dialects import estimate
from holdfast.dialects.base import (
    MAX_LABEL,
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
    as_int,
    checked_usage,
    label,
    text_of,
)
from holdfast.dialects.sse import SKIM_TEXT, data_event, skim_member, skim_text, sse_data
from holdfast.dialects.tool_calls import MAX_ARGUMENT_BYTES, CallAssembler
from holdfast.json_limits import provider_json

NAME: Final = "openai.chat"
PER_MESSAGE: Final = 4
REPLY_PRIMING: Final = 3
MAX_CHOICES: Final = 128
CAP_FIELDS: Final = ("max_completion_tokens", "max_tokens")
OPENAI_API_HOST: Final = "api.openai.com"
_DONE: Final = b"[DONE]"
# A chunk that only streams text to choice 0, in the compact form providers write: scalar
# members around one choice whose delta holds the content (and at most the role), every other
# member of the choice null. Members the decoder reads (error, choices) are never among the
# scalars -- usage may be, as null, which the decoder ignores.
_MEMBER: Final = skim_member("error", "choices")
_PLAIN: Final = re.compile(
    rb"data: ?+\{(?:" + _MEMBER + rb", ?+)*+"
    rb'"choices": ?+\[\{"index": ?+0, ?+"delta": ?+\{(?:"role": ?+"assistant", ?+)?+"content": ?+'
    + SKIM_TEXT
    + rb"\}"
    rb'(?:, ?+"(?:logprobs|finish_reason|stop_reason)": ?+null)*+\}\]'
    rb"(?:, ?+" + _MEMBER + rb")*+\}\n\n"
)
ERROR_TYPES: Final[dict[str, str]] = {
    "invalid_request": "invalid_request_error",
    "not_found": "invalid_request_error",
    "quota": "insufficient_quota",
    "upstream": "upstream_error",
    "service": "holdfast_error",
}


def usage_of(obj: object, where: str) -> Usage | None:
    """The ``usage`` object's counts; None when there is none or it is absurd."""
    usage = obj.get("usage") if isinstance(obj, dict) else None
    if not isinstance(usage, dict):
        return None
    return checked_usage(usage.get("prompt_tokens"), usage.get("completion_tokens"), where)


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestRefused(f"{name!r} must be a positive integer", name)
    return value


def _chars(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(
            len(p["text"])
            for p in content
            if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return 0


class ChatRequest:
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
        user = self.body.get("user")
        return user if isinstance(user, str) and user else None

    def output_cap(self) -> tuple[int | None, int]:
        # With both fields sent, the larger counts: which one a provider honours is its business.
        caps = [c for c in (_positive_int(self.body, n) for n in CAP_FIELDS) if c is not None]
        n = _positive_int(self.body, "n") or 1
        if n > MAX_CHOICES:
            raise RequestRefused(f"'n' must be at most {MAX_CHOICES}", "n")
        return (max(caps) if caps else None), n

    def write_output_cap(self, cap: int, base_url: str) -> str:
        # The field the agent named (even as null); else max_completion_tokens for OpenAI's own
        # API (max_tokens is deprecated there and refused by reasoning models) and max_tokens
        # for other OpenAI-compatible servers, many of which know no other. Never both.
        name = next((n for n in CAP_FIELDS if n in self.body), None)
        if name is None:
            openai = urlsplit(base_url).hostname == OPENAI_API_HOST
            name = "max_completion_tokens" if openai else "max_tokens"
        for other in CAP_FIELDS:
            self.body.pop(other, None)
        self.body[name] = cap
        return name

    def ask_stream_usage(self) -> bool:
        options = self.body.get("stream_options")
        asked = isinstance(options, dict) and options.get("include_usage") is True
        self.body["stream_options"] = {
            **(options if isinstance(options, dict) else {}),
            "include_usage": True,
        }
        return asked

    def _messages(self) -> list[Any]:
        messages = self.body.get("messages")
        return messages if isinstance(messages, list) else []

    def prompt_estimate(self, estimator: Estimator) -> int:
        if estimator == "tokens":
            encoding = estimate.tokenizer(self.model)
            if encoding is not None:
                return self._tokens(encoding)
        if estimator in ("bytes", "tokens"):
            parts = [
                self.body.get("messages", []),
                self.body.get("tools"),
                self.body.get("functions"),
            ]
            if self.body.get("response_format") is not None:
                parts.append(self.body["response_format"])
            return estimate.json_bytes(parts)
        messages = self._messages()
        chars = sum(_chars(m.get("content")) for m in messages if isinstance(m, dict))
        tools = self.body.get("tools")
        chars += len(json.dumps(tools)) if tools else 0
        return math.ceil(chars / 4) + PER_MESSAGE * len(messages) + REPLY_PRIMING

    def _tokens(self, encoding: estimate.Encoding) -> int:
        total = REPLY_PRIMING
        messages = self.body.get("messages", [])
        for message in messages if isinstance(messages, list) else [messages]:
            if not isinstance(message, dict):
                total += estimate.json_bytes(message)
                continue
            total += PER_MESSAGE
            for key, value in message.items():
                if key == "content":
                    total += estimate.content_tokens(encoding, value)
                elif isinstance(value, str):
                    total += estimate.count(encoding, value) + (1 if key == "name" else 0)
                else:
                    total += estimate.json_bytes({key: value})
        for name in ("tools", "functions", "response_format"):
            if self.body.get(name) is not None:
                total += estimate.json_bytes(self.body[name])
        return total

    def text_chars(self) -> int:
        return sum(_chars(m.get("content")) for m in self._messages() if isinstance(m, dict))

    def last_user_text(self, limit: int) -> str:
        for message in reversed(self._messages()):
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, str):
                    return content[:limit]
                if isinstance(content, list):
                    parts: list[str] = []
                    size = 0
                    for part in content:
                        if isinstance(part, dict) and isinstance(text := part.get("text"), str):
                            parts.append(text[: limit - size])
                            size += len(parts[-1])
                            if size >= limit:
                                break
                    return "\n".join(parts)
                return ""
        return ""

    def declared_tools(self) -> list[DeclaredTool]:
        tools = self.body.get("tools")
        out: list[DeclaredTool] = []
        for tool in tools if isinstance(tools, list) else ():
            function = tool.get("function") if isinstance(tool, dict) else None
            if isinstance(function, dict) and isinstance(name := function.get("name"), str):
                out.append(DeclaredTool(name, function.get("parameters", {}), _setter(function)))
        return out

    @property
    def system_field(self) -> str:
        return "messages"

    def system_slots(self) -> list[SystemSlot]:
        return [
            SystemSlot(i, m["content"], f"messages[{i}]")
            for i, m in enumerate(self._messages())
            if isinstance(m, dict)
            and m.get("role") == "system"
            and isinstance(m.get("content"), str)
        ]

    def set_system(self, position: int, text: str) -> None:
        messages = self._messages()
        messages[position] = {**messages[position], "content": text}

    def insert_system(self, text: str) -> None:
        messages = self.body.get("messages")
        if not isinstance(messages, list):
            raise RequestRefused("'messages' must be a list", "messages")
        messages.insert(0, {"role": "system", "content": text})

    def shadow_copy(self, model: str) -> dict[str, Any]:
        body = {k: v for k, v in self.body.items() if k != "stream_options"}
        body["model"] = model
        body["stream"] = False
        return body


def _setter(function: dict[str, Any]) -> Callable[[Any], None]:
    def replace(schema: Any) -> None:
        function["parameters"] = schema

    return replace


def _estimate(message: dict[str, Any]) -> int:
    tokens = math.ceil(len(str(message.get("content") or "")) / 4)
    if message.get("tool_calls"):
        tokens += math.ceil(len(json.dumps(message["tool_calls"])) / 4)
    return tokens


def _calls(choice: dict[str, Any], message: dict[str, Any]) -> list[ToolCall]:
    calls = message.get("tool_calls")
    out: list[ToolCall] = []
    for i, call in enumerate(calls if isinstance(calls, list) else ()):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        name, arguments = function.get("name"), function.get("arguments")
        out.append(
            ToolCall(
                choice=as_int(choice.get("index"), 0),
                index=i,
                name=name if isinstance(name, str) else "",
                arguments=arguments if isinstance(arguments, str) else json.dumps(arguments),
            )
        )
    return out


def decode_body(body: bytes) -> Answer | None:
    obj = provider_json(body, "openai.chat.body")
    if not isinstance(obj, dict) or not isinstance(choices := obj.get("choices"), list):
        return None
    text, refusal, estimate, answered = "", False, 0, 0
    calls: list[ToolCall] = []
    finished: list[str] = []
    for n, choice in enumerate(choices):
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        answered += 1
        if isinstance(reason := choice.get("finish_reason"), str):
            finished.append(reason[:MAX_LABEL])
        if n == 0:
            text = text_of(message.get("content"))
            refusal = bool(message.get("refusal"))
        estimate += _estimate(message)
        calls.extend(_calls(choice, message))
    usage = usage_of(obj, "openai.chat.body")
    return Answer(
        text,
        tuple(calls),
        usage,
        refusal,
        estimate,
        answered,
        finish_reasons=tuple(finished),
        response_model=label(obj.get("model")),
        response_id=label(obj.get("id")),
    )


class ChatStream:
    """Decodes ``chat.completion.chunk`` events; assembles tool calls across them."""

    __slots__ = ("_calls", "_named")

    def __init__(self, max_argument_bytes: int = MAX_ARGUMENT_BYTES) -> None:
        self._calls = CallAssembler(max_argument_bytes)
        self._named = False  # the answer's model and id were reported (every chunk repeats them)

    @property
    def open_calls(self) -> list[str]:
        return self._calls.open_names

    def finish(self) -> list[ToolCall]:
        return self._calls.finish()

    def skim(self, chunk: bytes) -> EventView | None:
        # Not before the model and id were reported: the first chunk is always decoded.
        if not self._named or (match := _PLAIN.fullmatch(chunk)) is None:
            return None
        text = skim_text(match[1])
        if text is None:
            return None
        return EventView(text, 1) if text else NO_EVENT

    def feed(self, event: bytes) -> EventView:
        data = sse_data(event)
        if data is None:
            return NO_EVENT
        if data[-1:].isspace() or data[:1].isspace():
            data = data.strip()
        if not data.startswith(b"{"):
            if data == _DONE:
                return EventView(done=True, calls=self._calls.finish())
            return NO_EVENT
        obj = provider_json(data, "openai.chat.event")
        if not isinstance(obj, dict):
            return NO_EVENT
        return self.observe(obj)

    def observe(self, obj: dict[str, Any]) -> EventView:
        """One chunk, already parsed (a translation reads the same object: one parse)."""
        view = EventView()
        if "error" in obj:
            view.error = True
        if not self._named and ("model" in obj or "id" in obj):
            self._named = True
            view.response_model, view.response_id = label(obj.get("model")), label(obj.get("id"))
        choices = obj.get("choices")
        raw_usage = obj.get("usage")
        if isinstance(raw_usage, dict):
            view.usage = usage_of(obj, "openai.chat.event")
            # Rejected usage (absurd counts) still marks the chunk include_usage added.
            view.usage_only = not choices
        if type(choices) is list:
            for choice in choices:
                if type(choice) is dict:
                    self._choice(choice, view)
        return view

    def _choice(self, choice: dict[str, Any], view: EventView) -> None:
        c = choice.get("index")
        if type(c) is not int:  # JSON gives int or bool (not an index), as as_int decides
            c = 0
        delta = choice.get("delta")
        done: list[ToolCall] = []
        if type(delta) is dict:
            content = delta.get("content")
            if (
                content
                or delta.get("tool_calls")
                or delta.get("refusal")
                or delta.get("reasoning_content")
                or delta.get("function_call")
            ):
                view.content += 1
            if c == 0:
                if isinstance(content, str):
                    view.text += content
                if delta.get("refusal"):
                    view.refusal = True
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for position, call in enumerate(calls):
                    if isinstance(call, dict):
                        done += self._fragment(c, as_int(call.get("index"), position), call)
        if (reason := choice.get("finish_reason")) is not None:
            if isinstance(reason, str):
                view.finish_reasons += (reason[:MAX_LABEL],)
            done += self._calls.end_choice(c)
        if done:
            view.calls = [*view.calls, *done]

    def _fragment(self, c: int, i: int, call: dict[str, Any]) -> list[ToolCall]:
        function = call.get("function")
        name = arguments = ""
        if isinstance(function, dict):
            name = function["name"] if isinstance(function.get("name"), str) else ""
            fragment = function.get("arguments")
            arguments = fragment if isinstance(fragment, str) else ""
        call_id = call.get("id")
        return self._calls.fragment(
            c, i, call_id if isinstance(call_id, str) else "", name, arguments
        )


def error_body(
    message: str, kind: ErrorKind, code: str, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": ERROR_TYPES[kind], "code": code, "param": param}}


def require_model(body: dict[str, Any]) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestRefused("'model' is required and must be a string", "model")


class ChatCompletions:
    name = NAME
    operation = "chat"
    provider_api = "openai"
    paths: tuple[str, ...] = ("/v1/chat/completions",)
    upstream_path = "/chat/completions"
    sse_errors = True
    session_headers: tuple[str, ...] = ()
    checks_answers = False

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        require_model(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise RequestRefused("'messages' is required: a non-empty list of messages", "messages")
        if not all(isinstance(m, dict) for m in messages):
            raise RequestRefused("each of 'messages' must be an object with a role", "messages")
        return ChatRequest(body)

    def decode_body(self, body: bytes) -> Answer | None:
        return decode_body(body)

    def stream_decoder(self) -> ChatStream:
        return ChatStream()

    def error_body(
        self, message: str, kind: ErrorKind, code: str, param: str | None = None
    ) -> dict[str, Any]:
        return error_body(message, kind, code, param)

    def stream_error(self, message: str, kind: ErrorKind, code: str) -> bytes:
        return data_event(error_body(message, kind, code))


DIALECT: Final = ChatCompletions()
