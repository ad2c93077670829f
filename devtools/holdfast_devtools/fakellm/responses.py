"""OpenAI Responses wire format of the fake upstream: requests, response objects, stream events.

Pure (no I/O): the stored responses themselves live in the app (``fakellm.app``), which hands a
continued response's context in. What the fake says follows ``generate`` exactly as for chat
completions -- the same pieces, tool calls and token counts -- with these Responses rules:

- The context of a request is the stored context of its ``previous_response_id`` (that
  response's input items and output items) followed by its own input; prompt tokens count the
  instructions and every context item's text (a function call's arguments, a call output's
  output) plus 3 per item.
- After a ``function_call_output`` as the last context item the fake answers in text: a model
  that is given its tool's result does not call the tool again.
- ``max_output_tokens`` below the reply's length cuts the reply (status ``incomplete``,
  ``incomplete_details.reason`` ``max_output_tokens``).
- ``input_items`` of a stored response list its whole context (earlier turns' inputs and
  outputs, then its own input), as OpenAI lists a chained response's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from holdfast_devtools.fakellm.generate import (
    JSON_MARKER,
    ChatRequest,
    Reply,
    message_text,
    prompt_tokens,
)
from holdfast_devtools.fakellm.protocol import ApiError

MAX_STORED: Final = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponsesRequest:
    chat: ChatRequest  # what ``generate.compose_reply`` reads
    body: Mapping[str, Any]
    input_items: tuple[dict[str, Any], ...]  # this request's own input, as items with ids
    previous: str | None
    store: bool


def _items(raw: object, new_id: Any) -> list[dict[str, Any]]:
    if isinstance(raw, str):
        raw = [{"type": "message", "role": "user", "content": raw}]
    if not isinstance(raw, list) or not raw:
        raise ApiError("input must be a string or a non-empty array of items", "input")
    items: list[dict[str, Any]] = []
    for item in raw:
        if not isinstance(item, dict):
            raise ApiError("each input item must be an object", "input")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message" and not isinstance(item.get("role"), str):
            raise ApiError("a message item needs a role", "input")
        if kind == "function_call_output" and not isinstance(item.get("call_id"), str):
            raise ApiError("a function_call_output item needs a call_id", "input")
        if kind == "item_reference":
            raise ApiError("item_reference is not supported by the fake", "input")
        if not isinstance(kind, str):
            raise ApiError("each input item needs a type", "input")
        prefix = {"message": "msg", "function_call": "fc", "function_call_output": "fco"}
        stored = {"id": item.get("id") or new_id(prefix.get(kind, "item")), **item, "type": kind}
        items.append(stored)
    return items


def item_text(item: Mapping[str, Any]) -> str:
    kind = item.get("type")
    if kind == "function_call":
        return str(item.get("arguments", ""))
    if kind == "function_call_output":
        output = item.get("output")
        return output if isinstance(output, str) else json.dumps(output)
    return message_text(item.get("content"))


def _tools(raw: object) -> dict[str, object]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ApiError("tools must be an array", "tools")
    declared: dict[str, object] = {}
    for tool in raw:
        if not isinstance(tool, dict) or not isinstance(tool.get("type"), str):
            raise ApiError("each tool must be an object with a type", "tools")
        if tool["type"] == "function":
            if not isinstance(tool.get("name"), str):
                raise ApiError("a function tool needs a name", "tools")
            declared[tool["name"]] = tool.get("parameters", {})
    return declared


def _tool_choice(raw: object) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str) and raw in ("none", "auto", "required"):
        return raw
    if isinstance(raw, dict) and raw.get("type") == "function" and isinstance(raw.get("name"), str):
        return str(raw["name"])
    raise ApiError("tool_choice must be none, auto, required or a function", "tool_choice")


def _positive(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ApiError(f"{name} must be a positive integer", name)
    return value


def parse(
    body: object, context: Sequence[Mapping[str, Any]], new_id: Any, *, model: str
) -> ResponsesRequest:
    """The request with its continued ``context`` (the stored items of its previous response)."""
    assert isinstance(body, dict)
    items = _items(body.get("input"), new_id)
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        raise ApiError("instructions must be a string", "instructions")
    if body.get("conversation") is not None:
        raise ApiError("conversations are not supported by the fake", "conversation")
    whole = [*context, *items]
    tool_choice = _tool_choice(body.get("tool_choice"))
    if whole and whole[-1].get("type") == "function_call_output":
        tool_choice = "none"  # given its tool's result, the model answers
    user_text = next(
        (item_text(i) for i in reversed(whole) if i.get("role") == "user"),
        "",
    )
    as_messages = [{"content": instructions}] if instructions else []
    as_messages += [{"content": item_text(i)} for i in whole]
    chat = ChatRequest(
        model=model,
        user_text=user_text,
        prompt_tokens=prompt_tokens(as_messages),
        stream=body.get("stream") is True,
        include_usage=True,
        max_tokens=_positive(body, "max_output_tokens"),
        tools=_tools(body.get("tools")),
        tool_choice=tool_choice,
        reply_json=isinstance(instructions, str) and JSON_MARKER in instructions,
    )
    previous = body.get("previous_response_id")
    return ResponsesRequest(
        chat=chat,
        body=body,
        input_items=tuple(items),
        previous=previous if isinstance(previous, str) else None,
        store=body.get("store") is not False,
    )


def usage(prompt: int, completion: int) -> dict[str, object]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


@dataclass(slots=True)
class Draft:
    """One response being produced: its id, its output items' ids, and its final object."""

    id: str
    request: ResponsesRequest
    reply: Reply
    item_id: str
    created_at: int

    @property
    def tool_call(self) -> Mapping[str, Any] | None:
        calls = self.reply.message.get("tool_calls")
        return calls[0] if isinstance(calls, list) and calls else None

    @property
    def text(self) -> str:
        return "".join(str(d.get("content", "")) for d in self.reply.deltas)

    def output_item(self) -> dict[str, Any]:
        call = self.tool_call
        if call is not None:
            function = call["function"]
            return {
                "id": self.item_id,
                "type": "function_call",
                "status": "completed",
                "call_id": call["id"],
                "name": function["name"],
                "arguments": function["arguments"],
            }
        return {
            "id": self.item_id,
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": self.text, "annotations": []}],
        }

    @property
    def incomplete(self) -> bool:
        return self.reply.finish_reason == "length"

    def response(self, *, status: str | None = None, with_usage: bool = True) -> dict[str, Any]:
        body = self.request.body
        done = status is None
        final = "incomplete" if self.incomplete else "completed"
        tools = body.get("tools")
        obj: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": final if done else status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"}
            if done and self.incomplete
            else None,
            "instructions": body.get("instructions"),
            "max_output_tokens": body.get("max_output_tokens"),
            "model": self.request.chat.model,
            "output": [self.output_item()] if done else [],
            "parallel_tool_calls": True,
            "previous_response_id": self.request.previous,
            "reasoning": {"effort": None, "summary": None},
            "store": self.request.store,
            "temperature": 1.0,
            "text": {"format": {"type": "text"}},
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": tools if isinstance(tools, list) else [],
            "top_p": 1.0,
            "truncation": "disabled",
            "usage": None,
            "user": body.get("user"),
            "metadata": body.get("metadata") or {},
        }
        if done and with_usage:
            obj["usage"] = usage(self.request.chat.prompt_tokens, self.reply.completion_tokens)
        return obj


def new_draft(response_id: str, item_id: str, request: ResponsesRequest, reply: Reply) -> Draft:
    return Draft(response_id, request, reply, item_id, int(time.time()))


class Events:
    """The SSE events of one streamed response, numbered as OpenAI numbers them."""

    def __init__(self, draft: Draft) -> None:
        self.draft = draft
        self.sequence = 0

    def event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return f"event: {kind}\ndata: ".encode() + json.dumps(payload).encode() + b"\n\n"

    def head(self) -> list[bytes]:
        d = self.draft
        out = [
            self.event("response.created", response=d.response(status="in_progress")),
            self.event("response.in_progress", response=d.response(status="in_progress")),
        ]
        call = d.tool_call
        if call is not None:
            item = {**d.output_item(), "status": "in_progress", "arguments": ""}
            out.append(self.event("response.output_item.added", output_index=0, item=item))
        else:
            item = {**d.output_item(), "status": "in_progress", "content": []}
            out.append(self.event("response.output_item.added", output_index=0, item=item))
            part = {"type": "output_text", "text": "", "annotations": []}
            out.append(
                self.event(
                    "response.content_part.added",
                    item_id=d.item_id,
                    output_index=0,
                    content_index=0,
                    part=part,
                )
            )
        return out

    def delta(self, piece: Mapping[str, object]) -> bytes | None:
        """One streamed piece of the reply (a text piece or an arguments fragment); None for
        the piece that only names the function (already in ``output_item.added``)."""
        d = self.draft
        if "content" in piece:
            return self.event(
                "response.output_text.delta",
                item_id=d.item_id,
                output_index=0,
                content_index=0,
                delta=piece["content"],
                logprobs=[],
            )
        calls = piece.get("tool_calls")
        fragment = calls[0]["function"].get("arguments", "") if isinstance(calls, list) else ""
        if "name" in (calls[0]["function"] if isinstance(calls, list) else {}):
            return None
        return self.event(
            "response.function_call_arguments.delta",
            item_id=d.item_id,
            output_index=0,
            delta=fragment,
        )

    def tail(self, *, with_usage: bool) -> list[bytes]:
        d = self.draft
        item = d.output_item()
        out: list[bytes] = []
        if d.tool_call is not None:
            out.append(
                self.event(
                    "response.function_call_arguments.done",
                    item_id=d.item_id,
                    output_index=0,
                    arguments=item["arguments"],
                )
            )
        else:
            part = item["content"][0]
            out.append(
                self.event(
                    "response.output_text.done",
                    item_id=d.item_id,
                    output_index=0,
                    content_index=0,
                    text=part["text"],
                    logprobs=[],
                )
            )
            out.append(
                self.event(
                    "response.content_part.done",
                    item_id=d.item_id,
                    output_index=0,
                    content_index=0,
                    part=part,
                )
            )
        out.append(self.event("response.output_item.done", output_index=0, item=item))
        final = "response.incomplete" if d.incomplete else "response.completed"
        out.append(self.event(final, response=d.response(with_usage=with_usage)))
        return out


def not_found(response_id: str) -> ApiError:
    return ApiError(f"Response with id '{response_id:.100}' not found.", None, None, status=404)


def previous_not_found(response_id: str) -> ApiError:
    return ApiError(
        f"Previous response with id '{response_id:.100}' not found.",
        "previous_response_id",
        "previous_response_not_found",
        status=400,
    )


def items_page(items: Sequence[Mapping[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    """One page of a stored response's input items (``limit``, ``order``, ``after``)."""
    try:
        limit = int(query.get("limit", "20"))
    except ValueError as exc:
        raise ApiError("limit must be an integer", "limit") from exc
    if not 1 <= limit <= 100:
        raise ApiError("limit must be between 1 and 100", "limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise ApiError("order must be asc or desc", "order")
    listed = list(items) if order == "asc" else list(reversed(items))
    after = query.get("after")
    if after:
        ids = [i.get("id") for i in listed]
        if after not in ids:
            raise ApiError(f"no item {after!r:.80} in this list", "after")
        listed = listed[ids.index(after) + 1 :]
    page = listed[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": len(listed) > limit,
    }
