"""Anthropic Messages wire format of the fake upstream: request validation, the message body,
the named stream events, ``count_tokens`` and errors in Anthropic's shape.

Pure (no I/O). Replies come from the same deterministic generator as chat completions
(holdfast_devtools.fakellm.generate): the same pieces, one completion token each, and the same
tool choice -- except that a request whose last user turn carries a ``tool_result`` is always
answered in text, so an agent loop that runs the tool and sends its result back ends.

- Prompt tokens: ``system`` text plus each message's text (text blocks, tool inputs as JSON,
  tool results) counted as for chat, 3 per message.
- Thinking: a request with ``thinking: {"type": "enabled"}`` gets a ``thinking`` block first
  (``THINKING_PIECES`` pieces, then a ``signature_delta``), counted as output tokens.
- Stream: ``message_start`` (input tokens, output 1), ``ping``, per block ``content_block_start``,
  one ``content_block_delta`` per token, ``content_block_stop``; ``message_delta`` (stop reason,
  output tokens) and ``message_stop``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from holdfast_devtools.fakellm.behaviour import Behaviour
from holdfast_devtools.fakellm.generate import (
    ARG_FRAGMENT_CHARS,
    JSON_MARKER,
    PER_MESSAGE_TOKENS,
    ChatRequest,
    as_json_pieces,
    count_tokens,
    pick_tool,
    reply_pieces,
    schema_value,
    seed_of,
)
from holdfast_devtools.fakellm.protocol import ApiError

VERSION_HEADER: Final = "anthropic-version"
KEY_HEADER: Final = "x-api-key"
THINKING_PIECES: Final = 3
ROLES: Final = frozenset({"user", "assistant", "system"})  # Claude Code sends system turns
_TOOL_CHOICE: Final = {"auto": "auto", "any": "required", "none": "none"}


class AnthropicError(ApiError):
    """An error answered in Anthropic's shape: ``{"type": "error", "error": {type, message}}``."""

    def body(self) -> dict[str, object]:
        return {"type": "error", "error": {"type": self.kind, "message": str(self)}}


def invalid(message: str) -> AnthropicError:
    return AnthropicError(message, status=400, kind="invalid_request_error")


def injected_error(behaviour: Behaviour) -> AnthropicError:
    status = behaviour.error_status
    if status == 429:
        retry = {"Retry-After": str(behaviour.retry_after_s)}
        return AnthropicError(
            "injected rate limit", status=429, kind="rate_limit_error", headers=retry
        )
    kind = {529: "overloaded_error", 401: "authentication_error", 404: "not_found_error"}.get(
        status, "api_error" if status >= 500 else "invalid_request_error"
    )
    return AnthropicError(f"injected error {status}", status=status, kind=kind)


def check_headers(headers: Mapping[str, str], expected_key: str | None) -> None:
    """Anthropic's own checks: the key in ``x-api-key`` (when one is required), then a
    ``anthropic-version`` header."""
    if expected_key is not None and headers.get(KEY_HEADER, "") != expected_key:
        raise AnthropicError("invalid x-api-key", status=401, kind="authentication_error")
    if not headers.get(VERSION_HEADER):
        raise invalid(f"{VERSION_HEADER}: header is required")


def content_text(content: object) -> list[str]:
    """Text of a content value: a string, or its blocks' text, tool inputs and tool results."""
    if isinstance(content, str):
        return [content]
    out: list[str] = []
    for block in content if isinstance(content, list) else ():
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            out.append(block["text"])
        elif block.get("type") == "tool_use":
            out.append(json.dumps(block.get("input", {})))
        elif block.get("type") == "tool_result":
            out.extend(content_text(block.get("content")))
    return out


def _has_tool_result(message: Mapping[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class MessagesRequest:
    chat: ChatRequest  # what the generator reads
    thinking: bool
    answered_tool: bool  # the last user turn carries a tool result: answer in text


def _tools(raw: object) -> dict[str, object]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise invalid("tools: Input should be a valid list")
    tools: dict[str, object] = {}
    for tool in raw:
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
            raise invalid("tools: each tool needs a name")
        if tool.get("type", "custom") == "custom":
            tools[tool["name"]] = tool.get("input_schema", {})
    return tools


def _tool_choice(raw: object) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, dict) and raw.get("type") in _TOOL_CHOICE:
        return _TOOL_CHOICE[raw["type"]]
    if isinstance(raw, dict) and raw.get("type") == "tool" and isinstance(raw.get("name"), str):
        return str(raw["name"])
    raise invalid("tool_choice: must be auto, any, none or {type: tool, name}")


def parse(body: object, *, needs_cap: bool = True) -> MessagesRequest:
    """A Messages (or count_tokens) request; AnthropicError 400 when Anthropic would refuse it."""
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model: Field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid("messages: at least one message is required")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise invalid(f"messages.{i}.role: Input should be 'user', 'assistant' or 'system'")
    cap = body.get("max_tokens")
    if needs_cap and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
        raise invalid("max_tokens: Field required (a positive integer)")
    system = " ".join(content_text(body.get("system")))
    prompt = count_tokens(system) + sum(
        count_tokens(" ".join(content_text(m.get("content")))) + PER_MESSAGE_TOKENS
        for m in messages
    )
    last_user: dict[str, Any] = next((m for m in reversed(messages) if m["role"] == "user"), {})
    content = last_user.get("content")
    blocks = content if isinstance(content, list) else []
    text_blocks = [b for b in blocks if isinstance(b, dict) and b.get("type") == "text"]
    user_text = " ".join(content_text(text_blocks))
    if isinstance(content, str):
        user_text = content
    thinking = body.get("thinking")
    chat = ChatRequest(
        model=model,
        user_text=user_text,
        prompt_tokens=prompt,
        stream=body.get("stream") is True,
        include_usage=True,
        max_tokens=cap if isinstance(cap, int) and not isinstance(cap, bool) else None,
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice")),
        reply_json=JSON_MARKER in system,
    )
    return MessagesRequest(
        chat=chat,
        thinking=isinstance(thinking, dict) and thinking.get("type") == "enabled",
        answered_tool=_has_tool_result(last_user),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    kind: str  # text | tool_use | thinking
    pieces: tuple[str, ...]  # one streamed delta (and output token) each
    name: str = ""
    tool_id: str = ""
    signature: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    blocks: tuple[Block, ...]
    stop_reason: str

    @property
    def output_tokens(self) -> int:
        # a tool_use block's start counts one, as the chunk that names a chat tool call does
        return sum(len(b.pieces) + (b.kind == "tool_use") for b in self.blocks)


def compose(request: MessagesRequest, *, length: int, tool_calls_on: bool) -> Message:
    chat = request.chat
    blocks: list[Block] = []
    if request.thinking:
        pieces = reply_pieces(chat.model, "thinking:" + chat.user_text, THINKING_PIECES)
        signature = f"sig_{seed_of(chat.model, chat.user_text):016x}"
        blocks.append(Block(kind="thinking", pieces=pieces, signature=signature))
    tool = None if request.answered_tool else pick_tool(chat, tool_calls_on)
    if tool is not None:
        seed = seed_of(chat.model, chat.user_text, tool)
        schema = chat.tools[tool]
        values = schema_value(schema, seed, 0) if isinstance(schema, Mapping) else {}
        arguments = json.dumps(values if isinstance(values, dict) else {}, separators=(",", ":"))
        fragments = tuple(
            arguments[i : i + ARG_FRAGMENT_CHARS]
            for i in range(0, len(arguments), ARG_FRAGMENT_CHARS)
        )
        call = Block(kind="tool_use", pieces=fragments, name=tool, tool_id=f"toolu_{seed:016x}")
        return Message(blocks=(*blocks, call), stop_reason="tool_use")
    stop = "end_turn"
    if chat.max_tokens is not None and chat.max_tokens < length:
        length, stop = chat.max_tokens, "max_tokens"
    pieces = reply_pieces(chat.model, chat.user_text, length)
    if chat.reply_json:
        pieces = as_json_pieces(pieces)
    return Message(blocks=(*blocks, Block(kind="text", pieces=pieces)), stop_reason=stop)


def usage(prompt: int, output: int) -> dict[str, int]:
    return {
        "input_tokens": prompt,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output,
    }


def _content(block: Block) -> dict[str, object]:
    text = "".join(block.pieces)
    if block.kind == "tool_use":
        arguments = json.loads(text)
        return {"type": "tool_use", "id": block.tool_id, "name": block.name, "input": arguments}
    if block.kind == "thinking":
        return {"type": "thinking", "thinking": text, "signature": block.signature}
    return {"type": "text", "text": text}


def message_body(
    message_id: str, request: MessagesRequest, message: Message, *, with_usage: bool
) -> dict[str, object]:
    body: dict[str, object] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": request.chat.model,
        "content": [_content(b) for b in message.blocks],
        "stop_reason": message.stop_reason,
        "stop_sequence": None,
    }
    if with_usage:
        body["usage"] = usage(request.chat.prompt_tokens, message.output_tokens)
    return body


def event(kind: str, payload: Mapping[str, object]) -> bytes:
    data = json.dumps({"type": kind, **payload}).encode()
    return f"event: {kind}\ndata: ".encode() + data + b"\n\n"


def _start(index: int, block: Block) -> bytes:
    head: dict[str, object]
    if block.kind == "tool_use":
        head = {"type": "tool_use", "id": block.tool_id, "name": block.name, "input": {}}
    elif block.kind == "thinking":
        head = {"type": "thinking", "thinking": ""}
    else:
        head = {"type": "text", "text": ""}
    return event("content_block_start", {"index": index, "content_block": head})


def _delta(index: int, block: Block, piece: str) -> bytes:
    delta: dict[str, object]
    if block.kind == "tool_use":
        delta = {"type": "input_json_delta", "partial_json": piece}
    elif block.kind == "thinking":
        delta = {"type": "thinking_delta", "thinking": piece}
    else:
        delta = {"type": "text_delta", "text": piece}
    return event("content_block_delta", {"index": index, "delta": delta})


def _stop(index: int, block: Block) -> bytes:
    signature = b""
    if block.kind == "thinking":
        delta = {"type": "signature_delta", "signature": block.signature}
        signature = event("content_block_delta", {"index": index, "delta": delta})
    return signature + event("content_block_stop", {"index": index})


@dataclass(frozen=True, slots=True)
class StreamFrames:
    """The bytes of one stream: ``head``, then one frame per output token (block boundaries
    ride on the token frame after them), then ``tail`` (``tail_without_usage`` for
    ``omit_usage``: no output count in ``message_delta``)."""

    head: bytes
    tokens: Sequence[bytes]
    tail: bytes


def stream_frames(
    message_id: str, request: MessagesRequest, message: Message, *, with_usage: bool
) -> StreamFrames:
    chat = request.chat
    start: dict[str, object] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": chat.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }
    if with_usage:
        start["usage"] = usage(chat.prompt_tokens, 1)
    head = event("message_start", {"message": start}) + event("ping", {})
    tokens: list[bytes] = []
    pending = b""  # block boundaries waiting for the next token frame
    for index, block in enumerate(message.blocks):
        pending += _start(index, block)
        if block.kind == "tool_use":
            tokens.append(pending)  # the start names the tool: one token of its own
            pending = b""
        for piece in block.pieces:
            tokens.append(pending + _delta(index, block, piece))
            pending = b""
        pending += _stop(index, block)
    delta: dict[str, object] = {
        "delta": {"stop_reason": message.stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": message.output_tokens} if with_usage else {},
    }
    tail = pending + event("message_delta", delta) + event("message_stop", {})
    return StreamFrames(head, tokens, tail)


def count_body(request: MessagesRequest) -> dict[str, int]:
    return {"input_tokens": request.chat.prompt_tokens}
