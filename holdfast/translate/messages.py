"""Anthropic Messages in and out of the neutral conversation: the agent's request read, the
provider's request written, answers and stream events both ways. Pure.

Usage: ``input_tokens`` is the prompt outside the cache, ``cache_read_input_tokens`` and
``cache_creation_input_tokens`` the rest of it; ``output_tokens`` the whole output
(``output_tokens_details.thinking_tokens`` of it reasoning). ``message_delta`` counts are
cumulative and may repeat (or first bring) the prompt's.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from holdfast.dialects import anthropic_messages
from holdfast.translate.fields import (
    as_dict,
    as_list,
    dumps,
    image_source,
    number,
    object_arguments,
    stops,
    text,
)
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

# The cap sent when the agent sent none: Messages requires one, OpenAI's APIs do not.
DEFAULT_MAX_TOKENS: Final = 8192
STOP_IN: Final[dict[str, StopReason]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "refusal",
}
STOP_OUT: Final[dict[StopReason, str]] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "refusal": "refusal",
}
CHOICE_IN: Final = {"auto": "auto", "any": "required", "none": "none"}
CHOICE_OUT: Final = {"auto": "auto", "required": "any", "none": "none"}


# -- usage ---------------------------------------------------------------------------------


def read_tokens(usage: object, earlier: Tokens | None = None) -> Tokens | None:
    """Counts of a ``usage`` object; what it omits is kept from ``earlier`` (message_start's)."""
    u = as_dict(usage)
    fresh, read, written, output = (
        count(u.get(n))
        for n in (
            "input_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
            "output_tokens",
        )
    )
    if fresh is None and output is None and earlier is None:
        return None
    base = earlier or Tokens()
    read = base.cache_read if read is None else read
    written = base.cache_write if written is None else written
    prompt = base.prompt if fresh is None else fresh + read + written
    thinking = count(as_dict(u.get("output_tokens_details")).get("thinking_tokens"))
    return Tokens(
        prompt=prompt,
        output=base.output if output is None else output,
        cache_read=read,
        cache_write=written,
        reasoning=base.reasoning if thinking is None else thinking,
    )


def write_tokens(tokens: Tokens) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": max(0, tokens.prompt - tokens.cache_read - tokens.cache_write),
        "cache_creation_input_tokens": tokens.cache_write,
        "cache_read_input_tokens": tokens.cache_read,
        "output_tokens": tokens.output,
    }
    if tokens.reasoning:
        usage["output_tokens_details"] = {"thinking_tokens": tokens.reasoning}
    return usage


# -- the agent's request -------------------------------------------------------------------


def _image(block: dict[str, Any], where: str) -> Part:
    source = as_dict(block.get("source"))
    if source.get("type") == "base64":
        return Part(
            "image", data=text(source.get("data")), media_type=text(source.get("media_type"))
        )
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return Part("image", url=source["url"])
    raise Untranslatable(f"{where}: only base64 and URL images can be translated", where)


def _result_parts(content: object, where: str) -> list[Part]:
    if isinstance(content, str):
        return [Part("text", content)] if content else []
    parts: list[Part] = []
    for j, raw in enumerate(as_list(content)):
        block, at = as_dict(raw), f"{where}[{j}]"
        if block.get("type") == "text":
            parts.append(Part("text", text(block.get("text"))))
        elif block.get("type") == "image":
            parts.append(_image(block, at))
        else:
            raise Untranslatable(
                f"{at}: a {block.get('type')!r:.40} block cannot be translated", at
            )
    return parts


def _turns(message: dict[str, Any], where: str) -> list[Turn]:
    """One Messages turn as neutral turns: a user turn's tool results become tool turns, first
    (an OpenAI tool message must follow the call it answers), then its other content."""
    role, content = message.get("role"), message.get("content")
    if role not in ("user", "assistant", "system"):
        raise Untranslatable(f"{where}: turns of role {role!r:.40} cannot be translated", where)
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else as_list(content)
    results: list[Turn] = []
    main = Turn(role, where=where)
    for j, raw in enumerate(blocks):
        block, at = as_dict(raw), f"{where}.content[{j}]"
        kind = block.get("type")
        if kind == "text":
            if block.get("citations"):
                raise Untranslatable(f"{at}: text with citations cannot be translated", at)
            main.parts.append(Part("text", text(block.get("text"))))
        elif kind == "image" and role == "user":
            main.parts.append(_image(block, at))
        elif kind == "tool_use" and role == "assistant":
            arguments = dumps(block.get("input") if block.get("input") is not None else {})
            main.calls.append(Call(text(block.get("id")), text(block.get("name")), arguments))
        elif kind == "tool_result" and role == "user":
            results.append(
                Turn(
                    "tool",
                    _result_parts(block.get("content"), f"{at}.content"),
                    call_id=text(block.get("tool_use_id")),
                    error=block.get("is_error") is True,
                    where=at,
                )
            )
        elif kind in ("thinking", "redacted_thinking"):
            raise Untranslatable(
                f"{at}: thinking blocks (and their signatures) only Anthropic can read; the "
                "provider's API has no place for them",
                at,
            )
        else:
            raise Untranslatable(f"{at}: a {kind!r:.40} block cannot be translated", at)
    if main.parts or main.calls or not results:
        return [*results, main]
    return results


def read_request(body: dict[str, Any]) -> Conversation:
    conv = Conversation(model=str(body["model"]), stream=body.get("stream") is True)
    system = body.get("system")
    if isinstance(system, str):
        conv.system = [system] if system else []
    else:
        for i, raw in enumerate(as_list(system)):
            block = as_dict(raw)
            if block.get("type") != "text":
                raise Untranslatable(f"system[{i}]: only text blocks can be translated", "system")
            conv.system.append(text(block.get("text")))
    for i, raw in enumerate(as_list(body.get("messages"))):
        conv.turns.extend(_turns(as_dict(raw), f"messages[{i}]"))
    for i, raw in enumerate(as_list(body.get("tools"))):
        tool = as_dict(raw)
        if tool.get("type", "custom") != "custom":
            raise Untranslatable(f"tools[{i}]: server tools cannot be translated", f"tools[{i}]")
        if tool.get("defer_loading") is True:
            # Not in the model's context until a tool search loads it (a tool_reference block
            # in a tool result, which is refused): the provider is not shown it either.
            continue
        strict = tool.get("strict")
        conv.tools.append(
            Tool(
                text(tool.get("name")),
                text(tool.get("description")),
                tool.get("input_schema"),
                strict if isinstance(strict, bool) else None,
            )
        )
    choice = body.get("tool_choice")
    if choice is not None:
        c = as_dict(choice)
        kind = c.get("type")
        if kind == "tool" and isinstance(c.get("name"), str):
            conv.tool_choice = ToolChoice("tool", c["name"])
        elif kind in CHOICE_IN:
            conv.tool_choice = ToolChoice(CHOICE_IN[kind])  # type: ignore[arg-type]
        else:
            raise Untranslatable("this 'tool_choice' cannot be translated", "tool_choice")
        if c.get("disable_parallel_tool_use") is True:
            conv.parallel_calls = False
    cap = body.get("max_tokens")
    conv.max_tokens = cap if isinstance(cap, int) and not isinstance(cap, bool) else None
    conv.temperature = number(body, "temperature")
    conv.top_p = number(body, "top_p")
    conv.stop = stops(body.get("stop_sequences"), "stop_sequences")
    conv.user = text(as_dict(body.get("metadata")).get("user_id"))
    conv.stream_usage = True  # every Messages stream carries usage
    return conv


# -- the provider's request ----------------------------------------------------------------


def _blocks(parts: list[Part], where: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in parts:
        if p.kind == "text":
            if p.text:
                out.append({"type": "text", "text": p.text})
        elif p.url:
            out.append({"type": "image", "source": image_source(p.url, where)})
        else:
            source = {"type": "base64", "media_type": p.media_type, "data": p.data}
            out.append({"type": "image", "source": source})
    return out


def _message(turn: Turn) -> dict[str, Any]:
    if turn.role == "system":
        raise Untranslatable(
            f"{turn.where}: a system message after the conversation started cannot be "
            "translated (Anthropic takes system instructions only before the first turn)",
            turn.where,
        )
    if turn.role == "tool":
        result: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": turn.call_id,
            "content": _blocks(turn.parts, turn.where) or "",
        }
        if turn.error:
            result["is_error"] = True
        return {"role": "user", "content": [result]}
    blocks = _blocks(turn.parts, turn.where)
    for c in turn.calls:
        arguments = object_arguments(c.arguments, turn.where)
        blocks.append({"type": "tool_use", "id": c.id, "name": c.name, "input": arguments})
    return {"role": turn.role, "content": blocks}


def write_request(conv: Conversation) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    for turn in conv.turns:
        message = _message(turn)
        if not message["content"]:
            continue  # an empty assistant turn (content null, no calls) says nothing
        last = messages[-1] if messages else None
        # Anthropic wants one user turn for the results of parallel calls (and what follows
        # them): consecutive user-side turns merge, as OpenAI's tool messages do.
        if last is not None and last["role"] == message["role"] == "user":
            last["content"] = [*_as_blocks(last["content"]), *_as_blocks(message["content"])]
        else:
            messages.append(message)
    body: dict[str, Any] = {
        "model": conv.model,
        "max_tokens": conv.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": messages,
    }
    if conv.system:
        body["system"] = (
            conv.system[0]
            if len(conv.system) == 1
            else [{"type": "text", "text": s} for s in conv.system if s]
        )
    if conv.tools:
        tools = []
        for t in conv.tools:
            tool: dict[str, Any] = {"name": t.name, "input_schema": t.parameters or _EMPTY}
            if t.description:
                tool["description"] = t.description
            if t.strict is not None:
                tool["strict"] = t.strict
            tools.append(tool)
        body["tools"] = tools
        choice: dict[str, Any] = {}
        if conv.tool_choice is not None:
            kind = conv.tool_choice.kind
            choice = (
                {"type": "tool", "name": conv.tool_choice.name}
                if kind == "tool"
                else {"type": CHOICE_OUT[kind]}
            )
        if conv.parallel_calls is False:
            choice = {"type": "auto", **choice, "disable_parallel_tool_use": True}
        if choice:
            body["tool_choice"] = choice
    for name, value in (("temperature", conv.temperature), ("top_p", conv.top_p)):
        if value is not None:
            body[name] = value
    if conv.stop:
        body["stop_sequences"] = conv.stop
    if conv.user:
        body["metadata"] = {"user_id": conv.user}
    if conv.stream:
        body["stream"] = True
    return body


def _as_blocks(content: object) -> list[Any]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else as_list(content)


_EMPTY: Final = {"type": "object", "properties": {}}


# -- answers -------------------------------------------------------------------------------


def read_answer(obj: object) -> Reply:
    body = as_dict(obj)
    if body.get("type") != "message" or not isinstance(body.get("content"), list):
        raise BadAnswer("the provider's answer is not an Anthropic message")
    reply = Reply(id=text(body.get("id")), model=text(body.get("model")))
    texts: list[str] = []
    for raw in body["content"]:
        block = as_dict(raw)
        if block.get("type") == "text":
            texts.append(text(block.get("text")))
        elif block.get("type") == "tool_use":
            arguments = dumps(block.get("input") if block.get("input") is not None else {})
            reply.calls.append(Call(text(block.get("id")), text(block.get("name")), arguments))
        # thinking: the model's hidden reasoning, which OpenAI's APIs never show either
    reply.text = "".join(texts)
    reason = text(body.get("stop_reason"))
    reply.stop = STOP_IN.get(reason, "stop")
    reply.said = reason
    reply.stop_sequence = text(body.get("stop_sequence"))
    reply.tokens = read_tokens(body.get("usage"))
    return reply


def write_answer(reply: Reply) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    said = reply.text or reply.refusal
    if said:
        content.append({"type": "text", "text": said})
    for c in reply.calls:
        arguments = object_arguments(c.arguments, "the model's tool call")
        content.append({"type": "tool_use", "id": c.id, "name": c.name, "input": arguments})
    return {
        "id": reply.id,
        "type": "message",
        "role": "assistant",
        "model": reply.model,
        "content": content,
        "stop_reason": STOP_OUT[reply.stop],
        "stop_sequence": None,
        "usage": write_tokens(reply.tokens or Tokens()),
    }


def read_error(obj: object) -> tuple[str, str]:
    error = as_dict(as_dict(obj).get("error"))
    return text(error.get("message")), text(error.get("type"))


# -- streams -------------------------------------------------------------------------------


class StreamReader:
    """Named events of a provider's stream, neutral; tool calls keyed by their block index."""

    __slots__ = ("_calls", "_tokens")

    def __init__(self) -> None:
        self._tokens: Tokens | None = None
        self._calls: set[int] = set()

    def read(self, obj: dict[str, Any] | None) -> list[Event]:
        if obj is None:
            return []
        kind = obj.get("type")
        if kind == "content_block_delta":
            delta = as_dict(obj.get("delta"))
            index = obj.get("index")
            dkind = delta.get("type")
            if dkind == "text_delta" and isinstance(t := delta.get("text"), str) and t:
                return [TextDelta(t)]
            if dkind == "input_json_delta" and isinstance(index, int) and index in self._calls:
                part = delta.get("partial_json")
                return [CallDelta(index, part)] if isinstance(part, str) and part else []
            return []  # thinking, signatures, citations: nothing OpenAI's APIs carry
        if kind == "content_block_start":
            return self._start(obj)
        if kind == "content_block_stop":
            index = obj.get("index")
            if isinstance(index, int) and index in self._calls:
                self._calls.discard(index)
                return [CallEnded(index)]
            return []
        if kind == "message_start":
            message = as_dict(obj.get("message"))
            self._tokens = read_tokens(message.get("usage"))
            return [Opened(text(message.get("id")), text(message.get("model")), self._tokens)]
        if kind == "message_delta":
            out: list[Event] = []
            tokens = read_tokens(obj.get("usage"), self._tokens)
            if tokens is not None:
                self._tokens = tokens
                out.append(Reported(tokens))
            delta = as_dict(obj.get("delta"))
            reason = delta.get("stop_reason")
            if isinstance(reason, str):
                out.insert(
                    0, Finished(STOP_IN.get(reason, "stop"), text(delta.get("stop_sequence")))
                )
            return out
        if kind == "message_stop":
            return [Closed()]
        if kind == "error":
            said, code = read_error(obj)
            return [Failed(said or "the provider reported an error", code or "upstream_error")]
        return []

    def _start(self, obj: dict[str, Any]) -> list[Event]:
        block, index = as_dict(obj.get("content_block")), obj.get("index")
        if not isinstance(index, int):
            return []
        if block.get("type") == "text":
            t = block.get("text")
            return [TextDelta(t)] if isinstance(t, str) and t else []
        if block.get("type") == "tool_use":
            self._calls.add(index)
            out: list[Event] = [CallStarted(index, text(block.get("id")), text(block.get("name")))]
            given = block.get("input")
            if isinstance(given, dict) and given:
                out.append(CallDelta(index, dumps(given)))
            return out
        return []


def event(kind: str, payload: dict[str, Any]) -> bytes:
    return (
        b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **payload}) + b"\n\n"
    )


class StreamWriter:
    """Neutral events as a Messages stream for the agent: one content block open at a time
    (text, or a tool call); the stop reason waits for the usage, which ``message_delta``
    carries with it."""

    __slots__ = ("_blocks", "_closed", "_current", "_failed", "_keys", "_stop", "_tokens")

    def __init__(self) -> None:
        self._keys: dict[int, int] = {}  # the provider's call keys -> their block index
        self._failed = False  # an error event went out: nothing more may follow it
        self._blocks = 0  # blocks opened so far: the next one's index
        self._current: tuple[str, int] | None = None  # ("text" | "call", index) open now
        self._closed: set[int] = set()  # calls whose block is stopped
        self._stop: Finished | None = None
        self._tokens: Tokens | None = None

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        head = self._close()
        index = self._blocks
        self._blocks += 1
        self._current = (kind, index)
        return head + event("content_block_start", {"index": index, "content_block": block})

    def _close(self) -> bytes:
        if self._current is None:
            return b""
        _, index = self._current
        self._current = None
        return event("content_block_stop", {"index": index})

    def write(self, e: Event) -> list[Segment]:
        if self._failed:
            return []
        if isinstance(e, TextDelta | RefusalDelta):
            head = (
                b""
                if self._current is not None and self._current[0] == "text"
                else (self._open("text", {"type": "text", "text": ""}))
            )
            assert self._current is not None
            delta = {"type": "text_delta", "text": e.text}
            return [
                (
                    head
                    + event("content_block_delta", {"index": self._current[1], "delta": delta}),
                    False,
                )
            ]
        if isinstance(e, CallDelta):
            if e.key in self._closed or self._current != ("call", self._index(e.key)):
                return self._interleaved()
            delta = {"type": "input_json_delta", "partial_json": e.arguments}
            return [
                (event("content_block_delta", {"index": self._current[1], "delta": delta}), False)
            ]
        if isinstance(e, CallStarted):
            block = {"type": "tool_use", "id": e.id, "name": e.name, "input": {}}
            opened = self._open("call", block)
            self._keys[e.key] = self._current[1] if self._current else 0
            return [(opened, False)]
        if isinstance(e, CallEnded):
            if self._current == ("call", self._index(e.key)):
                self._closed.add(e.key)
                return [(self._close(), False)]
            self._closed.add(e.key)
            return []
        if isinstance(e, Opened):
            self._tokens = e.tokens
            message: dict[str, Any] = {
                "id": e.id or "msg_holdfast",
                "type": "message",
                "role": "assistant",
                "model": e.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": write_tokens(e.tokens or Tokens()),
            }
            return [(event("message_start", {"message": message}), False)]
        if isinstance(e, Finished):
            self._stop = e
            return [(self._close(), False)] if self._current is not None else []
        if isinstance(e, Reported):
            self._tokens = e.tokens
            return []
        if isinstance(e, Closed):
            stop = self._stop or Finished("stop")
            stopped: dict[str, Any] = {
                "stop_reason": STOP_OUT[stop.stop],
                "stop_sequence": stop.stop_sequence or None,
            }
            usage = write_tokens(self._tokens or Tokens())
            tail = event("message_delta", {"delta": stopped, "usage": usage})
            return [(self._close() + tail + event("message_stop", {}), False)]
        self._failed = True  # Failed: the provider's in-band error, the stream's last word
        return [(anthropic_messages.stream_error(e.message, "upstream", e.code), False)]

    def _index(self, key: int) -> int:
        return self._keys.get(key, -1)

    def _interleaved(self) -> list[Segment]:
        self._failed = True
        message = (
            "the provider streamed parallel tool calls interleaved; Anthropic's stream carries "
            "one block at a time, so the translated stream was ended rather than corrupt a call"
        )
        error = anthropic_messages.stream_error(message, "upstream", "untranslatable_answer")
        return [(error, False)]
