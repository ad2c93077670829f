"""OpenAI chat completions in and out of the neutral conversation: the agent's request read,
the provider's request written, answers and stream chunks both ways. Pure.

Usage: ``prompt_tokens`` is the whole prompt (``prompt_tokens_details.cached_tokens`` read from
the cache, ``cache_write_tokens`` written to it), ``completion_tokens`` the whole output
(``completion_tokens_details.reasoning_tokens`` of it reasoning).
"""

from __future__ import annotations

import time
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

from holdfast.dialects import RequestRefused, openai_chat
from holdfast.translate.fields import as_dict, as_list, dumps, number, stops, text
from holdfast.translate.neutral import (
    BadAnswer,
    Call,
    CallDelta,
    CallEnded,
    CallStarted,
    Closed,
    Conversation,
    Event,
    Failed,
    Finished,
    Opened,
    Part,
    RefusalDelta,
    Reply,
    Reported,
    Segment,
    StopReason,
    TextDelta,
    Tokens,
    Tool,
    ToolChoice,
    Turn,
    Untranslatable,
    count,
)

FINISH_IN: Final[dict[str, StopReason]] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "refusal",
}
FINISH_OUT: Final[dict[StopReason, str]] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "refusal": "content_filter",
}
SYSTEM_ROLES: Final = frozenset({"system", "developer"})
DONE: Final = b"data: [DONE]\n\n"


# -- usage ---------------------------------------------------------------------------------


def read_tokens(usage: object) -> Tokens | None:
    u = as_dict(usage)
    prompt, output = count(u.get("prompt_tokens")), count(u.get("completion_tokens"))
    if prompt is None and output is None:
        return None
    details, out_details = (
        as_dict(u.get("prompt_tokens_details")),
        as_dict(u.get("completion_tokens_details")),
    )
    return Tokens(
        prompt=prompt or 0,
        output=output or 0,
        cache_read=count(details.get("cached_tokens")) or 0,
        cache_write=count(details.get("cache_write_tokens")) or 0,
        reasoning=count(out_details.get("reasoning_tokens")) or 0,
    )


def write_tokens(tokens: Tokens) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": tokens.prompt,
        "completion_tokens": tokens.output,
        "total_tokens": tokens.prompt + tokens.output,
        "prompt_tokens_details": {"cached_tokens": tokens.cache_read},
        "completion_tokens_details": {"reasoning_tokens": tokens.reasoning},
    }
    if tokens.cache_write:
        usage["prompt_tokens_details"]["cache_write_tokens"] = tokens.cache_write
    return usage


# -- the agent's request -------------------------------------------------------------------


def _parts(content: object, where: str, *, images: bool) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [Part("text", content)] if content else []
    if not isinstance(content, list):
        raise Untranslatable(f"{where} must be a string or a list of content parts", where)
    parts: list[Part] = []
    for j, raw in enumerate(content):
        part, at = as_dict(raw), f"{where}[{j}]"
        kind = part.get("type")
        if kind in ("text", "refusal"):
            parts.append(Part("text", text(part.get(kind))))
        elif kind == "image_url" and images:
            image = as_dict(part.get("image_url"))
            parts.append(
                Part("image", url=text(image.get("url")), detail=text(image.get("detail")))
            )
        else:
            raise Untranslatable(f"{at}: content of type {kind!r:.40} cannot be translated", at)
    return parts


def _calls(message: dict[str, Any], where: str) -> list[Call]:
    out: list[Call] = []
    for j, raw in enumerate(as_list(message.get("tool_calls"))):
        call, at = as_dict(raw), f"{where}.tool_calls[{j}]"
        function = as_dict(call.get("function"))
        if call.get("type", "function") != "function" or not isinstance(function.get("name"), str):
            raise Untranslatable(f"{at}: only function tool calls can be translated", at)
        arguments = function.get("arguments")
        out.append(
            Call(
                text(call.get("id")),
                function["name"],
                arguments if isinstance(arguments, str) else dumps(arguments or {}),
            )
        )
    return out


def _turn(message: dict[str, Any], where: str) -> Turn:
    role = message.get("role")
    for unsupported in ("name", "audio", "function_call"):
        if message.get(unsupported) is not None:
            raise Untranslatable(f"{where}.{unsupported} cannot be translated", where)
    content = message.get("content")
    if role in SYSTEM_ROLES:
        return Turn("system", _parts(content, f"{where}.content", images=False), where=where)
    if role == "user":
        return Turn("user", _parts(content, f"{where}.content", images=True), where=where)
    if role == "assistant":
        parts = _parts(content, f"{where}.content", images=False)
        return Turn("assistant", parts, _calls(message, where), where=where)
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str):
            raise Untranslatable(f"{where}.tool_call_id is required", where)
        parts = _parts(content, f"{where}.content", images=False)
        return Turn("tool", parts, call_id=call_id, where=where)
    raise Untranslatable(f"{where}: messages of role {role!r:.40} cannot be translated", where)


def _tools(body: dict[str, Any]) -> list[Tool]:
    tools: list[Tool] = []
    for i, raw in enumerate(as_list(body.get("tools"))):
        tool, at = as_dict(raw), f"tools[{i}]"
        function = as_dict(tool.get("function"))
        if tool.get("type") != "function" or not isinstance(function.get("name"), str):
            raise Untranslatable(f"{at}: only function tools can be translated", at)
        strict = function.get("strict")
        tools.append(
            Tool(
                function["name"],
                text(function.get("description")),
                function.get("parameters"),
                strict if isinstance(strict, bool) else None,
            )
        )
    return tools


def _tool_choice(value: object) -> ToolChoice | None:
    if value is None:
        return None
    if value in ("auto", "none", "required"):
        return ToolChoice(value)
    choice = as_dict(value)
    name = as_dict(choice.get("function")).get("name")
    if choice.get("type") == "function" and isinstance(name, str):
        return ToolChoice("tool", name)
    raise Untranslatable("this 'tool_choice' cannot be translated", "tool_choice")


def read_request(body: dict[str, Any]) -> Conversation:
    """The agent's chat completion request, neutral (its features already judged)."""
    conv = Conversation(model=str(body["model"]), stream=body.get("stream") is True)
    conv.stream_usage = as_dict(body.get("stream_options")).get("include_usage") is True
    started = False
    for i, raw in enumerate(as_list(body.get("messages"))):
        turn = _turn(as_dict(raw), f"messages[{i}]")
        if turn.role == "system" and not started:
            conv.system.append("".join(p.text for p in turn.parts))
            continue
        started = True
        conv.turns.append(turn)
    conv.tools = _tools(body)
    conv.tool_choice = _tool_choice(body.get("tool_choice"))
    parallel = body.get("parallel_tool_calls")
    conv.parallel_calls = parallel if isinstance(parallel, bool) else None
    try:
        conv.max_tokens, _ = openai_chat.ChatRequest(body).output_cap()
    except RequestRefused as exc:
        raise Untranslatable(str(exc), exc.param) from exc
    conv.temperature = number(body, "temperature")
    conv.top_p = number(body, "top_p")
    conv.stop = stops(body.get("stop"), "stop")
    conv.user = text(body.get("user")) or text(body.get("safety_identifier"))
    return conv


# -- the provider's request ----------------------------------------------------------------


def _content(parts: list[Part], where: str, *, images: bool) -> str | list[dict[str, Any]]:
    if all(p.kind == "text" for p in parts):
        return "".join(p.text for p in parts)
    out: list[dict[str, Any]] = []
    for p in parts:
        if p.kind == "text":
            out.append({"type": "text", "text": p.text})
        elif not images:
            raise Untranslatable(
                f"{where}: an image here cannot be translated (chat completions take images "
                "only in user messages)",
                where,
            )
        else:
            image: dict[str, Any] = {"url": p.data_url()}
            if p.detail:
                image["detail"] = p.detail
            out.append({"type": "image_url", "image_url": image})
    return out


def _message(turn: Turn) -> dict[str, Any]:
    if turn.role == "assistant":
        message: dict[str, Any] = {
            "role": "assistant",
            "content": _content(turn.parts, turn.where, images=False) or None,
        }
        if turn.calls:
            message["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": c.arguments},
                }
                for c in turn.calls
            ]
        return message
    if turn.role == "tool":
        content = _content(turn.parts, turn.where, images=False)
        return {"role": "tool", "tool_call_id": turn.call_id, "content": content}
    return {"role": turn.role, "content": _content(turn.parts, turn.where, images=True)}


def cap_field(base_url: str) -> str:
    """The cap field an OpenAI-compatible provider honours (as the chat dialect writes it)."""
    openai = urlsplit(base_url).hostname == openai_chat.OPENAI_API_HOST
    return "max_completion_tokens" if openai else "max_tokens"


def write_request(conv: Conversation, base_url: str) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": s} for s in conv.system]
    messages += [_message(t) for t in conv.turns]
    body: dict[str, Any] = {"model": conv.model, "messages": messages}
    if conv.tools:
        tools = []
        for t in conv.tools:
            function: dict[str, Any] = {"name": t.name, "parameters": t.parameters or _EMPTY}
            if t.description:
                function["description"] = t.description
            if t.strict is not None:
                function["strict"] = t.strict
            tools.append({"type": "function", "function": function})
        body["tools"] = tools
        if conv.parallel_calls is not None:
            body["parallel_tool_calls"] = conv.parallel_calls
        if conv.tool_choice is not None:
            choice = conv.tool_choice
            body["tool_choice"] = (
                {"type": "function", "function": {"name": choice.name}}
                if choice.kind == "tool"
                else choice.kind
            )
    if conv.max_tokens is not None:
        body[cap_field(base_url)] = conv.max_tokens
    for name, value in (("temperature", conv.temperature), ("top_p", conv.top_p)):
        if value is not None:
            body[name] = value
    if conv.stop:
        body["stop"] = conv.stop
    if conv.user:
        body["user"] = conv.user
    if conv.reasoning_effort:
        body["reasoning_effort"] = conv.reasoning_effort
    if conv.json_format is not None:
        body["response_format"] = conv.json_format
    if conv.stream:
        # Always: budgets settle on the provider's own count, whatever the agent asked for.
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


_EMPTY: Final = {"type": "object", "properties": {}}


# -- answers -------------------------------------------------------------------------------


def read_answer(obj: object) -> Reply:
    body = as_dict(obj)
    choices = as_list(body.get("choices"))
    message = as_dict(as_dict(choices[0]).get("message")) if choices else {}
    if not message:
        raise BadAnswer("the provider's chat completion has no choice with a message")
    return Reply(
        id=text(body.get("id")),
        model=text(body.get("model")),
        text=text(message.get("content"))
        if isinstance(message.get("content"), str)
        else "".join(p.text for p in _parts(message.get("content"), "content", images=False)),
        calls=_calls(message, "message"),
        stop=FINISH_IN.get(said := text(as_dict(choices[0]).get("finish_reason")), "stop"),
        refusal=text(message.get("refusal")),
        tokens=read_tokens(body.get("usage")),
        created=count(body.get("created")) or 0,
        said=said,
    )


def write_answer(reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": reply.text or None,
        "refusal": reply.refusal or None,
    }
    if reply.calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in reply.calls
        ]
    body: dict[str, Any] = {
        "id": reply.id,
        "object": "chat.completion",
        "created": reply.created or int(time.time()),
        "model": reply.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": FINISH_OUT[reply.stop],
            }
        ],
    }
    if reply.tokens is not None:
        body["usage"] = write_tokens(reply.tokens)
    return body


def read_error(obj: object) -> tuple[str, str]:
    """(message, code) of an OpenAI-style error body ("" when it is not one)."""
    error = as_dict(as_dict(obj).get("error"))
    code = error.get("code") or error.get("type")
    return text(error.get("message")), code if isinstance(code, str) else ""


# -- streams -------------------------------------------------------------------------------


class StreamReader:
    """Chunks of a provider's stream, neutral. Calls are keyed by their ``index``; a new id at
    an index already in use (providers that number every call 0) starts another call."""

    __slots__ = ("_calls", "_next_key", "_opened")

    def __init__(self) -> None:
        self._opened = False
        self._calls: dict[int, tuple[str, int]] = {}  # provider index -> (id, neutral key)
        self._next_key = 0

    def read(self, obj: dict[str, Any] | None) -> list[Event]:
        """One parsed chunk (None: the ``[DONE]`` marker)."""
        if obj is None:
            return [Closed()]
        out: list[Event] = []
        if "error" in obj:
            message, code = read_error(obj)
            return [Failed(message or "the provider reported an error", code or "upstream_error")]
        if not self._opened:
            self._opened = True
            out.append(Opened(text(obj.get("id")), text(obj.get("model"))))
        choices = obj.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and choice.get("index", 0) == 0:
                self._choice(choice, out)
        usage = obj.get("usage")
        if isinstance(usage, dict):  # on its own chunk, or on the last one (Portkey #1259)
            tokens = read_tokens(usage)
            if tokens is not None:
                out.append(Reported(tokens))
        return out

    def _choice(self, choice: dict[str, Any], out: list[Event]) -> None:
        delta = as_dict(choice.get("delta"))
        content = delta.get("content")
        if isinstance(content, str) and content:
            out.append(TextDelta(content))
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            out.append(RefusalDelta(refusal))
        for position, raw in enumerate(as_list(delta.get("tool_calls"))):
            call = as_dict(raw)
            index = call.get("index", position)
            index = index if isinstance(index, int) else position
            function = as_dict(call.get("function"))
            call_id, name = text(call.get("id")), text(function.get("name"))
            known = self._calls.get(index)
            if known is None or (call_id and known[0] and call_id != known[0]):
                if known is not None:
                    out.append(CallEnded(known[1]))
                known = self._calls[index] = (call_id, self._next_key)
                self._next_key += 1
                out.append(CallStarted(known[1], call_id, name))
            arguments = function.get("arguments")
            if isinstance(arguments, str) and arguments:
                out.append(CallDelta(known[1], arguments))
        reason = choice.get("finish_reason")
        if isinstance(reason, str):
            out.extend(CallEnded(key) for _, key in self._calls.values())
            self._calls.clear()
            out.append(Finished(FINISH_IN.get(reason, "stop")))


class StreamWriter:
    """Neutral events as chat completion chunks for the agent. Calls are numbered 0, 1, 2... in
    the order they start, whatever the provider keyed them by (Portkey #1275)."""

    __slots__ = ("_head", "_indexes", "_tokens", "usage")

    def __init__(self, *, usage: bool) -> None:
        self.usage = usage  # the agent's body asks for a usage chunk (include_usage)
        self._head = b""
        self._indexes: dict[int, int] = {}
        self._tokens: Tokens | None = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._head + b',"choices":[' + orjson.dumps(choice) + b"]}\n\n"

    def write(self, event: Event) -> list[Segment]:
        if isinstance(event, TextDelta):
            return [(self._chunk({"content": event.text}), False)]
        if isinstance(event, CallDelta):
            index = self._indexes.get(event.key)
            if index is None:
                return []
            call = {"index": index, "function": {"arguments": event.arguments}}
            return [(self._chunk({"tool_calls": [call]}), False)]
        if isinstance(event, Opened):
            head = {
                "id": event.id or "chatcmpl-holdfast",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": event.model,
            }
            self._head = b"data: " + orjson.dumps(head)[:-1]
            self._tokens = event.tokens
            return [(self._chunk({"role": "assistant", "content": ""}), False)]
        if isinstance(event, CallStarted):
            index = self._indexes[event.key] = len(self._indexes)
            function = {"name": event.name, "arguments": ""}
            call = {"index": index, "id": event.id, "type": "function", "function": function}
            return [(self._chunk({"tool_calls": [call]}), False)]
        if isinstance(event, RefusalDelta):
            return [(self._chunk({"refusal": event.text}), False)]
        if isinstance(event, Finished):
            return [(self._chunk({}, FINISH_OUT[event.stop]), False)]
        if isinstance(event, Reported):
            self._tokens = event.tokens
            return []
        if isinstance(event, Closed):
            out: list[Segment] = []
            if self.usage and self._tokens is not None:
                usage = orjson.dumps(write_tokens(self._tokens))
                out.append((self._head + b',"choices":[],"usage":' + usage + b"}\n\n", True))
            return [*out, (DONE, False)]
        if isinstance(event, Failed):
            error = openai_chat.error_body(event.message, "upstream", event.code)
            return [(b"data: " + orjson.dumps(error) + b"\n\n", False)]
        return []  # CallEnded: a chat stream says nothing when a call is complete
