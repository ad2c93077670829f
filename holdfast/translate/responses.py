"""OpenAI Responses as an agent's API over a provider of another: the agent's request read into
the neutral conversation (stateless: the whole conversation is in ``input``), the answer and
the stream written back as Responses. Pure.

The stream is what strict clients (Codex CLI: LiteLLM #29254) need: every event carries its
``type`` (the same as its ``event:`` name) and an increasing ``sequence_number``;
``response.created`` and ``response.in_progress`` open it, each output item is
``output_item.added`` ... ``output_item.done`` with its content parts and their ``done`` events
between, and ``response.completed`` (or ``response.incomplete``) ends it with the whole
response object, usage included. The ``done`` events repeat an item's whole text, as the API
defines them: the writer keeps a copy of what it sent, never an event back.

Usage: ``input_tokens`` is the whole prompt (``input_tokens_details.cached_tokens`` of it read
from the cache, ``cache_write_tokens`` written to it), ``output_tokens`` the whole output
(``output_tokens_details.reasoning_tokens``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from holdfast.translate.fields import as_dict, as_list, dumps, number, text
from holdfast.translate.neutral import (
    Call,
    CallDelta,
    CallEnded,
    CallStarted,
    Closed,
    Conversation,
    Event,
    Finished,
    Opened,
    Part,
    RefusalDelta,
    Reply,
    Reported,
    Segment,
    TextDelta,
    Tokens,
    Tool,
    ToolChoice,
    Turn,
    Untranslatable,
)

SYSTEM_ROLES: Final = frozenset({"system", "developer"})
TEXT_PARTS: Final = frozenset({"input_text", "output_text", "text", "refusal"})
# Response fields echoed from the request, as OpenAI echoes them.
ECHOED: Final = (
    "instructions",
    "max_output_tokens",
    "metadata",
    "temperature",
    "top_p",
    "user",
    "prompt_cache_key",
    "safety_identifier",
    "service_tier",
)


# -- usage ---------------------------------------------------------------------------------


def write_tokens(tokens: Tokens) -> dict[str, Any]:
    return {
        "input_tokens": tokens.prompt,
        "input_tokens_details": {
            "cached_tokens": tokens.cache_read,
            "cache_write_tokens": tokens.cache_write,
        },
        "output_tokens": tokens.output,
        "output_tokens_details": {"reasoning_tokens": tokens.reasoning},
        "total_tokens": tokens.prompt + tokens.output,
    }


# -- the agent's request -------------------------------------------------------------------


def _parts(content: object, where: str) -> list[Part]:
    if isinstance(content, str):
        return [Part("text", content)] if content else []
    parts: list[Part] = []
    for j, raw in enumerate(as_list(content)):
        part, at = as_dict(raw), f"{where}[{j}]"
        kind = part.get("type")
        if kind in TEXT_PARTS:
            parts.append(Part("text", text(part.get("refusal" if kind == "refusal" else "text"))))
        elif kind == "input_image" and isinstance(part.get("image_url"), str):
            parts.append(Part("image", url=part["image_url"], detail=text(part.get("detail"))))
        else:
            raise Untranslatable(f"{at}: content of type {kind!r:.40} cannot be translated", at)
    return parts


def _item(conv: Conversation, item: dict[str, Any], where: str, started: bool) -> bool:
    """Fold one input item into ``conv``; returns whether the conversation has started."""
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        role = item.get("role")
        parts = _parts(item.get("content"), f"{where}.content")
        if role in SYSTEM_ROLES:
            if not started:
                conv.system.append("".join(p.text for p in parts))
                return False
            conv.turns.append(Turn("system", parts, where=where))
        elif role in ("user", "assistant"):
            conv.turns.append(Turn(role, parts, where=where))
        else:
            raise Untranslatable(
                f"{where}: messages of role {role!r:.40} cannot be translated", where
            )
    elif kind == "function_call":
        arguments = item.get("arguments")
        call = Call(
            text(item.get("call_id")),
            text(item.get("name")),
            arguments if isinstance(arguments, str) else dumps(arguments or {}),
        )
        last = conv.turns[-1] if conv.turns else None
        if last is not None and last.role == "assistant":
            last.calls.append(call)  # parallel calls: one assistant turn, as chat wants them
        else:
            conv.turns.append(Turn("assistant", calls=[call], where=where))
    elif kind == "function_call_output":
        output = item.get("output")
        parts = _parts(output, f"{where}.output")
        conv.turns.append(Turn("tool", parts, call_id=text(item.get("call_id")), where=where))
    elif kind == "reasoning":
        # The issuing provider's hidden state (encrypted for it alone): another provider can
        # neither read nor verify it (LiteLLM #40364). The visible conversation goes on.
        return started
    else:
        raise Untranslatable(
            f"{where}: input items of type {kind!r:.40} cannot be translated", where
        )
    return True


def _tool_choice(value: object) -> ToolChoice | None:
    if value is None:
        return None
    if value in ("auto", "none", "required"):
        return ToolChoice(value)
    choice = as_dict(value)
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return ToolChoice("tool", choice["name"])
    raise Untranslatable("this 'tool_choice' cannot be translated", "tool_choice")


def _json_format(body: dict[str, Any]) -> dict[str, Any] | None:
    """``text.format`` as chat completions' ``response_format``."""
    fmt = as_dict(as_dict(body.get("text")).get("format"))
    kind = fmt.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    schema = {k: v for k, v in fmt.items() if k in ("name", "schema", "strict", "description")}
    return {"type": "json_schema", "json_schema": schema}


def read_request(body: dict[str, Any]) -> Conversation:
    conv = Conversation(model=str(body["model"]), stream=body.get("stream") is True)
    instructions = body.get("instructions")
    if isinstance(instructions, str) and instructions:
        conv.system.append(instructions)
    value = body.get("input")
    items = (
        [{"type": "message", "role": "user", "content": value}]
        if isinstance(value, str)
        else (as_list(value))
    )
    started = False
    for i, raw in enumerate(items):
        started = _item(conv, as_dict(raw), f"input[{i}]", started)
    for i, raw in enumerate(as_list(body.get("tools"))):
        tool, at = as_dict(raw), f"tools[{i}]"
        if tool.get("type") != "function" or not isinstance(tool.get("name"), str):
            raise Untranslatable(f"{at}: only function tools can be translated", at)
        strict = tool.get("strict")
        conv.tools.append(
            Tool(
                tool["name"],
                text(tool.get("description")),
                tool.get("parameters"),
                strict if isinstance(strict, bool) else None,
            )
        )
    conv.tool_choice = _tool_choice(body.get("tool_choice"))
    parallel = body.get("parallel_tool_calls")
    conv.parallel_calls = parallel if isinstance(parallel, bool) else None
    cap = body.get("max_output_tokens")
    conv.max_tokens = cap if isinstance(cap, int) and not isinstance(cap, bool) else None
    conv.temperature = number(body, "temperature")
    conv.top_p = number(body, "top_p")
    conv.user = text(body.get("user")) or text(body.get("safety_identifier"))
    conv.reasoning_effort = text(as_dict(body.get("reasoning")).get("effort"))
    conv.json_format = _json_format(body)
    conv.stream_usage = True  # the terminal event always carries usage
    return conv


# -- answers -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Item:
    """One output item as it is written: a message (text, or a refusal) or a function call."""

    id: str
    kind: str  # "message" | "function_call"
    index: int
    call_id: str = ""
    name: str = ""
    parts: list[str] = field(default_factory=list)
    refusal: bool = False  # a message item whose content is a refusal
    done: bool = False

    def whole(self, status: str = "completed") -> dict[str, Any]:
        joined = "".join(self.parts)
        if self.kind == "function_call":
            return {
                "id": self.id,
                "type": "function_call",
                "status": status,
                "call_id": self.call_id,
                "name": self.name,
                "arguments": joined,
            }
        part = self.part(joined)
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": [part],
        }

    def part(self, said: str = "") -> dict[str, Any]:
        if self.refusal:
            return {"type": "refusal", "refusal": said}
        return {"type": "output_text", "text": said, "annotations": [], "logprobs": []}


class Template:
    """The response object around the output: what the request asked, echoed as OpenAI does."""

    __slots__ = ("body", "created", "id", "model")

    def __init__(self, body: dict[str, Any], response_id: str, model: str) -> None:
        self.body = body
        self.id = response_id
        self.model = model
        self.created = int(time.time())

    def response(
        self, status: str, output: list[dict[str, Any]], tokens: Tokens | None, stop: str
    ) -> dict[str, Any]:
        b = self.body
        obj: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": {"reason": stop} if status == "incomplete" else None,
            "model": self.model,
            "output": output,
            "parallel_tool_calls": b.get("parallel_tool_calls") is not False,
            "previous_response_id": None,
            "reasoning": {"effort": as_dict(b.get("reasoning")).get("effort"), "summary": None},
            "store": False,  # translated: the provider keeps nothing (ADR 0012)
            "text": {"format": as_dict(as_dict(b.get("text")).get("format")) or {"type": "text"}},
            "tool_choice": b.get("tool_choice", "auto"),
            "tools": as_list(b.get("tools")),
            "truncation": "disabled",
            "usage": write_tokens(tokens) if tokens is not None else None,
        }
        for name in ECHOED:
            obj[name] = b.get(name)
        if obj["metadata"] is None:
            obj["metadata"] = {}
        return obj


def response_id(provider_id: str) -> str:
    return "resp_" + (provider_id or f"holdfast{time.time_ns():x}")


def _status(reply_stop: str) -> tuple[str, str]:
    """(status, incomplete reason) of a response that ended for ``reply_stop``."""
    if reply_stop == "length":
        return "incomplete", "max_output_tokens"
    if reply_stop == "refusal":
        return "incomplete", "content_filter"
    return "completed", ""


def write_answer(reply: Reply, request: dict[str, Any]) -> dict[str, Any]:
    template = Template(request, response_id(reply.id), reply.model)
    output: list[dict[str, Any]] = []
    said = reply.text or reply.refusal
    if said:
        item = _Item(f"msg_{reply.id}", "message", 0, parts=[said], refusal=not reply.text)
        output.append(item.whole())
    for i, c in enumerate(reply.calls):
        item = _Item(
            f"fc_{reply.id}_{i}", "function_call", len(output), c.id, c.name, [c.arguments]
        )
        output.append(item.whole())
    status, reason = _status(reply.stop)
    return template.response(status, output, reply.tokens, reason)


# -- streams -------------------------------------------------------------------------------


class StreamWriter:
    """Neutral events as a Responses stream for the agent (see the module's docstring)."""

    __slots__ = (
        "_calls",
        "_current",
        "_failed",
        "_items",
        "_request",
        "_seq",
        "_stop",
        "_template",
        "_tokens",
    )

    def __init__(self, request: dict[str, Any]) -> None:
        self._request = request
        self._seq = 0
        self._template: Template | None = None
        self._items: list[_Item] = []
        self._current: _Item | None = None
        self._calls: dict[int, _Item] = {}
        self._tokens: Tokens | None = None
        self._stop = "stop"
        self._failed = False

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _item_id(self, prefix: str) -> str:
        base = self._template.id[5:] if self._template is not None else "holdfast"
        return f"{prefix}_{base}_{len(self._items)}"

    def _open(self, item: _Item, added: dict[str, Any]) -> bytes:
        head = self._close()
        self._items.append(item)
        self._current = item
        return head + self._event("response.output_item.added", output_index=item.index, item=added)

    def _close(self) -> bytes:
        item, self._current = self._current, None
        if item is None or item.done:
            return b""
        item.done = True
        joined = "".join(item.parts)
        common = {"item_id": item.id, "output_index": item.index}
        if item.kind == "function_call":
            out = self._event("response.function_call_arguments.done", **common, arguments=joined)
        else:
            done = "response.refusal.done" if item.refusal else "response.output_text.done"
            said = {"refusal": joined} if item.refusal else {"text": joined, "logprobs": []}
            out = self._event(done, **common, content_index=0, **said)
            out += self._event(
                "response.content_part.done", **common, content_index=0, part=item.part(joined)
            )
        return out + self._event(
            "response.output_item.done", output_index=item.index, item=item.whole()
        )

    def write(self, e: Event) -> list[Segment]:
        if self._failed:
            return []
        if isinstance(e, TextDelta | RefusalDelta):
            return [(self._text(e.text, refusal=isinstance(e, RefusalDelta)), False)]
        if isinstance(e, CallDelta):
            item = self._calls.get(e.key)
            if item is None or item.done or item is not self._current:
                return self._interleaved()
            item.parts.append(e.arguments)
            delta = self._event(
                "response.function_call_arguments.delta",
                item_id=item.id,
                output_index=item.index,
                delta=e.arguments,
            )
            return [(delta, False)]
        if isinstance(e, CallStarted):
            item = _Item(self._item_id("fc"), "function_call", len(self._items), e.id, e.name)
            self._calls[e.key] = item
            added = {**item.whole("in_progress"), "arguments": ""}
            return [(self._open(item, added), False)]
        if isinstance(e, CallEnded):
            item = self._calls.get(e.key)
            return [(self._close(), False)] if item is not None and item is self._current else []
        if isinstance(e, Opened):
            self._template = Template(self._request, response_id(e.id), e.model)
            self._tokens = e.tokens
            empty = self._template.response("in_progress", [], None, "")
            out = self._event("response.created", response=empty)
            out += self._event("response.in_progress", response=empty)
            return [(out, False)]
        if isinstance(e, Finished):
            self._stop = e.stop
            return [(self._close(), False)]
        if isinstance(e, Reported):
            self._tokens = e.tokens
            return []
        if isinstance(e, Closed):
            return [(self._close() + self._finish(), False)]
        self._failed = True  # Failed: the provider's in-band error, the stream's last word
        return [(self._error(e.message, e.code), False)]

    def _text(self, said: str, *, refusal: bool) -> bytes:
        item = self._current
        head = b""
        if item is None or item.kind != "message" or item.refusal != refusal:
            item = _Item(self._item_id("msg"), "message", len(self._items), refusal=refusal)
            added = {**item.whole("in_progress"), "content": []}
            head = self._open(item, added)
            head += self._event(
                "response.content_part.added",
                item_id=item.id,
                output_index=item.index,
                content_index=0,
                part=item.part(),
            )
        item.parts.append(said)
        if refusal:
            delta = self._event(
                "response.refusal.delta",
                item_id=item.id,
                output_index=item.index,
                content_index=0,
                delta=said,
            )
        else:
            delta = self._event(
                "response.output_text.delta",
                item_id=item.id,
                output_index=item.index,
                content_index=0,
                delta=said,
                logprobs=[],
            )
        return head + delta

    def _finish(self) -> bytes:
        assert self._template is not None
        status, reason = _status(self._stop)
        output = [item.whole() for item in self._items]
        response = self._template.response(status, output, self._tokens, reason)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return self._event(kind, response=response)

    def _error(self, message: str, code: str) -> bytes:
        return self._event("error", code=code, message=message, param=None)

    def _interleaved(self) -> list[Segment]:
        self._failed = True
        message = (
            "the provider streamed parallel tool calls interleaved; a Responses stream carries "
            "one output item at a time, so the translated stream was ended rather than corrupt "
            "a call"
        )
        return [(self._error(message, "untranslatable_answer"), False)]
