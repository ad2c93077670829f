"""Anthropic Messages requests as the filters see them: what the API requires (refused before
anything is forwarded), and the neutral view over ``model``, ``messages``, ``system``, ``tools``,
``max_tokens``, ``stream`` and ``metadata.user_id`` (holdfast.dialects.anthropic_messages). Pure.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any, Final

from holdfast.dialects.base import DeclaredTool, Estimator, RequestRefused, SystemSlot

PER_MESSAGE: Final = 4
REPLY_PRIMING: Final = 3


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
        # No tokenizer counts this API's parts yet: ``tokens`` takes the bytes bound, which is
        # never short (``chars`` can be, and a short estimate can be overspent).
        system, tools = self.body.get("system"), self.body.get("tools")
        if estimator in ("bytes", "tokens"):
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
