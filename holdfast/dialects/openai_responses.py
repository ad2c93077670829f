"""OpenAI Responses (``POST /v1/responses``), plain and streamed, and its stored state.

Requests: ``model``, ``input`` (a string, or items: messages with a ``role`` and string or part
content, ``function_call``/``function_call_output`` items...), ``instructions`` (the system
slot), ``tools`` (function tools ``{"type": "function", "name", "parameters"}``; built-in tools
pass through untouched), ``max_output_tokens`` (the output cap; one answer per request),
``stream``, ``store`` (default true: the provider keeps the answer), ``previous_response_id`` or
``conversation`` (provider-held state the request continues). The session hint is
``prompt_cache_key`` (one conversation's key; Codex CLI sends its session id there), else
``user``, else ``safety_identifier`` (one end user).

Answers: a ``response`` object whose ``output`` holds ``message`` items (``output_text`` and
``refusal`` parts), ``function_call`` items (``name``, ``arguments``, ``call_id``) and
``reasoning`` items; ``usage`` has ``input_tokens`` and ``output_tokens``. Streams are named
events (``event: <type>`` + ``data: {"type": ...}``): ``response.created`` (the id),
``response.output_item.added``/``done``, ``response.output_text.delta``,
``response.function_call_arguments.delta``/``done`` (a call's arguments, keyed by
``output_index``), ``response.reasoning_*``, and one terminal event -- ``response.completed``
or ``response.incomplete`` (with usage), ``response.failed`` or ``error``. Usage always comes
with the terminal event: nothing has to be asked for, nothing is stripped.

Prompt estimators as for chat completions (``bytes``: the UTF-8 size of the JSON of the
instructions, input and tools, an upper bound; ``chars``: characters / 4 + 4 per item + 3).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote

from holdfast.dialects.base import (
    NO_EVENT,
    Answer,
    DeclaredTool,
    ErrorKind,
    Estimator,
    EventView,
    RequestRefused,
    StateFetch,
    StatefulDialect,
    StateGone,
    StateRef,
    SystemSlot,
    ToolCall,
    Usage,
    as_int,
    checked_usage,
    text_of,
)
from holdfast.dialects.openai_chat import error_body, require_model
from holdfast.dialects.sse import SKIM_TEXT, data_event, skim_member, skim_text, sse_data
from holdfast.dialects.tool_calls import MAX_ARGUMENT_BYTES, CallAssembler
from holdfast.json_limits import provider_json

NAME: Final = "openai.responses"
PER_ITEM: Final = 4
REPLY_PRIMING: Final = 3
CAP_FIELD: Final = "max_output_tokens"
SYSTEM_ROLES: Final = frozenset({"system", "developer"})
# Events that carry generated content (one token each when the provider reports no usage).
_CONTENT_EVENTS: Final = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_text.delta",
        "response.reasoning_summary_text.delta",
    }
)
_TERMINAL: Final = frozenset({"response.completed", "response.incomplete", "response.failed"})
_DONE: Final = b"[DONE]"
# How far back a rebuild follows a chain whose provider lists only each answer's own input.
MAX_REBUILD_TURNS: Final = 256
MAX_ITEM_PAGES: Final = 1000
# Fields of an output item that only the issuing provider understands (its store's ids, the
# item's status as it streamed): left out when the item is carried to another release.
_LOCAL_FIELDS: Final = frozenset({"id", "status"})


def usage_of(obj: object, where: str) -> Usage | None:
    usage = obj.get("usage") if isinstance(obj, dict) else None
    if not isinstance(usage, dict):
        return None
    return checked_usage(usage.get("input_tokens"), usage.get("output_tokens"), where)


def _optional(body: dict[str, Any], name: str, kind: type, what: str) -> None:
    value = body.get(name)
    if value is None:
        return
    # bool is an int to Python, never to JSON's readers
    ok = isinstance(value, bool) if kind is bool else isinstance(value, kind)
    if not ok or (kind is not bool and isinstance(value, bool)):
        raise RequestRefused(f"{name!r} must be {what}", name)


def _items_chars(items: list[Any]) -> int:
    return sum(len(text_of(i.get("content"))) for i in items if isinstance(i, dict))


class ResponsesRequest:
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
        for name in ("prompt_cache_key", "user", "safety_identifier"):
            value = self.body.get(name)
            if isinstance(value, str) and value:
                return value
        return None

    def output_cap(self) -> tuple[int | None, int]:
        value = self.body.get(CAP_FIELD)
        if value is None:
            return None, 1
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RequestRefused(f"{CAP_FIELD!r} must be a positive integer", CAP_FIELD)
        return value, 1

    def write_output_cap(self, cap: int, base_url: str) -> str:
        self.body[CAP_FIELD] = cap
        return CAP_FIELD

    def ask_stream_usage(self) -> bool:
        return True  # the terminal event always carries usage: nothing to ask, nothing to strip

    def _items(self) -> list[Any]:
        """The input as items (a string input is one user message)."""
        value = self.body.get("input")
        if isinstance(value, str):
            return [{"role": "user", "content": value}]
        return value if isinstance(value, list) else []

    def prompt_estimate(self, estimator: Estimator) -> int:
        # No tokenizer counts this API's parts yet: ``tokens`` takes the bytes bound, which is
        # never short (``chars`` can be, and a short estimate can be overspent).
        if estimator in ("bytes", "tokens"):
            parts = [self.body.get("instructions"), self.body.get("input"), self.body.get("tools")]
            return len(
                json.dumps(parts, ensure_ascii=False, separators=(",", ":")).encode(
                    "utf-8", "surrogatepass"
                )
            )
        items = self._items()
        chars = self.text_chars()
        tools = self.body.get("tools")
        chars += len(json.dumps(tools)) if tools else 0
        return math.ceil(chars / 4) + PER_ITEM * (len(items) + 1) + REPLY_PRIMING

    def text_chars(self) -> int:
        instructions = self.body.get("instructions")
        head = len(instructions) if isinstance(instructions, str) else 0
        return head + _items_chars(self._items())

    def last_user_text(self, limit: int) -> str:
        for item in reversed(self._items()):
            if isinstance(item, dict) and item.get("role") == "user":
                return text_of(item.get("content"))[:limit]
        return ""

    def declared_tools(self) -> list[DeclaredTool]:
        tools = self.body.get("tools")
        out: list[DeclaredTool] = []
        for tool in tools if isinstance(tools, list) else ():
            if (
                isinstance(tool, dict)
                and tool.get("type") == "function"
                and isinstance(name := tool.get("name"), str)
            ):
                out.append(DeclaredTool(name, tool.get("parameters", {}), _setter(tool)))
        return out

    @property
    def system_field(self) -> str:
        return "instructions"

    def system_slots(self) -> list[SystemSlot]:
        slots: list[SystemSlot] = []
        instructions = self.body.get("instructions")
        if isinstance(instructions, str):
            slots.append(SystemSlot(0, instructions, "instructions"))
        value = self.body.get("input")
        for i, item in enumerate(value if isinstance(value, list) else ()):
            if (
                isinstance(item, dict)
                and item.get("role") in SYSTEM_ROLES
                and isinstance(item.get("content"), str)
            ):
                slots.append(SystemSlot(i + 1, item["content"], f"input[{i}]"))
        return slots

    def set_system(self, position: int, text: str) -> None:
        if position == 0:
            self.body["instructions"] = text
            return
        items = self.body["input"]
        items[position - 1] = {**items[position - 1], "content": text}

    def insert_system(self, text: str) -> None:
        # Without instructions the text becomes them; with some, a system message goes first
        # in the input, so nothing the agent wrote is edited.
        if not self.body.get("instructions"):
            self.body["instructions"] = text
            return
        self.body["input"] = [{"role": "system", "content": text}, *self._items()]

    def shadow_copy(self, model: str) -> dict[str, Any]:
        # A shadow must neither continue state it was not given nor leave state behind.
        dropped = ("stream", "stream_options", "previous_response_id", "conversation", "background")
        body = {k: v for k, v in self.body.items() if k not in dropped}
        body["model"] = model
        body["store"] = False
        return body

    # -- provider-held state ---------------------------------------------------------------

    def state_ref(self) -> StateRef | None:
        previous = self.body.get("previous_response_id")
        if isinstance(previous, str) and previous:
            return StateRef(previous, "response", "previous_response_id")
        conversation = self.body.get("conversation")
        if isinstance(conversation, dict):
            conversation = conversation.get("id")
        if isinstance(conversation, str) and conversation:
            return StateRef(conversation, "conversation", "conversation")
        return None

    @property
    def stores(self) -> bool:
        return self.body.get("store") is not False

    def self_contained(self, history: list[Any]) -> None:
        self.body.pop("previous_response_id", None)
        self.body["input"] = [*history, *self._items()]


def _setter(tool: dict[str, Any]) -> Callable[[Any], None]:
    def replace(schema: Any) -> None:
        tool["parameters"] = schema

    return replace


def _check(body: dict[str, Any]) -> None:
    """What OpenAI would refuse before generating anything, refused here with its ``param``."""
    require_model(body)
    value = body.get("input")
    if value is None:
        raise RequestRefused("'input' is required: a string or a list of input items", "input")
    if isinstance(value, str):
        if not value:
            raise RequestRefused("'input' must not be empty", "input")
    elif not isinstance(value, list) or not all(isinstance(i, dict) for i in value):
        raise RequestRefused("'input' must be a string or a list of input items", "input")
    _optional(body, "instructions", str, "a string")
    _optional(body, "tools", list, "a list of tools")
    for name in ("stream", "store", "background"):
        _optional(body, name, bool, "true or false")
    _optional(body, "previous_response_id", str, "a response id")
    conversation = body.get("conversation")
    if conversation is not None and not (
        isinstance(conversation, str)
        or (isinstance(conversation, dict) and isinstance(conversation.get("id"), str))
    ):
        raise RequestRefused("'conversation' must be an id or {\"id\": ...}", "conversation")
    if body.get("previous_response_id") is not None and conversation is not None:
        raise RequestRefused(
            "'previous_response_id' and 'conversation' cannot be used together",
            "previous_response_id",
        )
    ResponsesRequest(body).output_cap()  # a cap that is not a positive integer


def _estimate(text: str, arguments: int) -> int:
    return math.ceil(len(text) / 4) + math.ceil(arguments / 4)


def decode_body(body: bytes) -> Answer | None:
    obj = provider_json(body, "openai.responses.body")
    if not isinstance(obj, dict) or "choices" in obj or not isinstance(obj.get("output"), list):
        return None
    texts: list[str] = []
    refusal = False
    calls: list[ToolCall] = []
    for index, item in enumerate(obj["output"]):
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            content = item.get("content")
            for part in content if isinstance(content, list) else ():
                if not isinstance(part, dict):
                    continue
                if part.get("type") == "refusal":
                    refusal = True
                elif isinstance(text := part.get("text"), str):
                    texts.append(text)
        elif kind == "function_call":
            name, arguments = item.get("name"), item.get("arguments")
            calls.append(
                ToolCall(
                    choice=0,
                    index=index,
                    name=name if isinstance(name, str) else "",
                    arguments=arguments if isinstance(arguments, str) else json.dumps(arguments),
                )
            )
    text = "".join(texts)
    issued = obj.get("id")
    return Answer(
        text,
        tuple(calls),
        usage_of(obj, "openai.responses.body"),
        refusal,
        _estimate(text, sum(len(c.arguments) for c in calls)),
        1,
        issued=issued if isinstance(issued, str) else "",
    )


# A text delta as OpenAI writes it (its event line naming it or not): members the decoder
# reads (type, delta) are never among the scalars around the delta.
_MEMBER: Final = skim_member("type", "delta")
_PLAIN: Final = re.compile(
    rb"(?:event: ?+[a-z_.]{1,64}+\n)?+"
    rb'data: ?+\{"type": ?+"response\.output_text\.delta"(?:, ?+' + _MEMBER + rb")*+"
    rb', ?+"delta": ?+' + SKIM_TEXT + rb"(?:, ?+" + _MEMBER + rb")*+\}\n\n"
)


class ResponsesStream:
    """Decodes Responses stream events; assembles function calls per ``output_index``."""

    __slots__ = ("_calls",)

    def __init__(self, max_argument_bytes: int = MAX_ARGUMENT_BYTES) -> None:
        self._calls = CallAssembler(max_argument_bytes)

    @property
    def open_calls(self) -> list[str]:
        return self._calls.open_names

    def finish(self) -> list[ToolCall]:
        return self._calls.finish()

    def skim(self, chunk: bytes) -> EventView | None:
        if (match := _PLAIN.fullmatch(chunk)) is None:
            return None
        text = skim_text(match[1])
        return None if text is None else EventView(text, 1)

    def feed(self, event: bytes) -> EventView:
        data = sse_data(event)
        if data is None:
            return NO_EVENT
        data = data.strip()
        if data == _DONE:
            return EventView(done=True, calls=self._calls.finish())
        if not data.startswith(b"{"):
            return NO_EVENT
        obj = provider_json(data, "openai.responses.event")
        if not isinstance(obj, dict):
            return NO_EVENT
        kind = obj.get("type")
        if not isinstance(kind, str):
            return NO_EVENT
        view = EventView()
        if kind in _CONTENT_EVENTS:
            view.content = 1
            delta = obj.get("delta")
            if kind == "response.output_text.delta" and isinstance(delta, str):
                view.text = delta
            elif kind == "response.refusal.delta":
                view.refusal = True
            elif kind == "response.function_call_arguments.delta":
                index = as_int(obj.get("output_index"), 0)
                fragment = delta if isinstance(delta, str) else ""
                view.calls = [*view.calls, *self._calls.fragment(0, index, "", "", fragment)]
        elif kind in ("response.output_item.added", "response.output_item.done"):
            self._item(kind, obj, view)
        elif kind == "response.function_call_arguments.done":
            arguments = obj.get("arguments")
            done = self._calls.end_call(
                0,
                as_int(obj.get("output_index"), 0),
                arguments if isinstance(arguments, str) else None,
            )
            view.calls = [*view.calls, *done]
        elif kind == "response.created":
            response = obj.get("response")
            issued = response.get("id") if isinstance(response, dict) else None
            view.issued = issued if isinstance(issued, str) else ""
        elif kind in _TERMINAL:
            view.done = True
            view.usage = usage_of(obj.get("response"), "openai.responses.event")
            if kind == "response.failed":
                view.error = True
                self._calls.finish()  # a failed answer's calls are nobody's to check
            else:
                view.calls = [*view.calls, *self._calls.finish()]
        elif kind == "error":
            view.error = True
        return view

    def _item(self, kind: str, obj: dict[str, Any], view: EventView) -> None:
        item = obj.get("item")
        if not isinstance(item, dict) or item.get("type") != "function_call":
            return
        index = as_int(obj.get("output_index"), 0)
        arguments = item.get("arguments")
        arguments = arguments if isinstance(arguments, str) else ""
        if kind == "response.output_item.added":
            name, call_id = item.get("name"), item.get("call_id")
            view.content = 1
            done = self._calls.fragment(
                0,
                index,
                call_id if isinstance(call_id, str) else "",
                name if isinstance(name, str) else "",
                arguments,
            )
            view.calls = [*view.calls, *done]
        else:
            view.calls = [*view.calls, *self._calls.end_call(0, index, arguments or None)]


def stream_error(message: str, kind: ErrorKind, code: str) -> bytes:
    payload = {"type": "error", "code": code, "message": message, "param": None}
    return data_event({**payload, "sequence_number": 0}, "error")


# -- rebuilding a conversation from the provider's store ---------------------------------------


def _portable(item: Any) -> Any | None:
    """An output or input item as another release can take it: without the issuing store's ids
    and statuses; None for what no other provider can use (reasoning, references into the
    issuing store)."""
    if not isinstance(item, dict) or item.get("type") in ("reasoning", "item_reference"):
        return None
    out = {k: v for k, v in item.items() if k not in _LOCAL_FIELDS}
    content = out.get("content")
    if isinstance(content, list):
        # output parts carry what only an answer has (logprobs): keep what an input may carry
        out["content"] = [
            {k: v for k, v in p.items() if k in ("type", "text", "refusal", "annotations")}
            if isinstance(p, dict) and p.get("type") in ("output_text", "refusal")
            else p
            for p in content
        ]
    return out


def _ids(items: list[Any]) -> set[str]:
    return {i["id"] for i in items if isinstance(i, dict) and isinstance(i.get("id"), str)}


async def _turn(state_id: str, fetch: StateFetch) -> tuple[list[Any], str | None]:
    """A stored answer's output items and the answer it continued."""
    body = await fetch(f"/responses/{quote(state_id, safe='')}")
    obj = provider_json(body, "openai.responses.stored") if body is not None else None
    if not isinstance(obj, dict) or not isinstance(obj.get("output"), list):
        raise StateGone(f"the provider no longer has response {state_id}")
    previous = obj.get("previous_response_id")
    return list(obj["output"]), previous if isinstance(previous, str) and previous else None


async def _input_items(state_id: str, fetch: StateFetch) -> list[Any]:
    items: list[Any] = []
    after: str | None = None
    for _ in range(MAX_ITEM_PAGES):
        path = f"/responses/{quote(state_id, safe='')}/input_items?order=asc&limit=100"
        body = await fetch(path + (f"&after={quote(after, safe='')}" if after else ""))
        obj = provider_json(body, "openai.responses.items") if body is not None else None
        if not isinstance(obj, dict) or not isinstance(obj.get("data"), list):
            raise StateGone(f"the provider no longer lists the input of response {state_id}")
        items.extend(obj["data"])
        last = obj.get("last_id")
        if obj.get("has_more") is not True or not isinstance(last, str) or not last:
            return items
        after = last
    raise StateGone(f"response {state_id} lists more than {MAX_ITEM_PAGES} pages of input")


async def history(state_id: str, fetch: StateFetch) -> list[Any]:
    """See ``StatefulDialect.history``. OpenAI lists a chained answer's whole input context
    (earlier turns included); a provider that lists only each answer's own input is followed
    back along ``previous_response_id``, told apart by whether the earlier answer's output
    items appear among the later one's input items."""
    turns: list[tuple[list[Any], list[Any]]] = []  # newest first: (input items, output items)
    current: str | None = state_id
    output, previous = await _turn(state_id, fetch)
    for _ in range(MAX_REBUILD_TURNS):
        assert current is not None
        items = await _input_items(current, fetch)
        turns.append((items, output))
        if previous is None:
            break
        earlier_output, earlier_previous = await _turn(previous, fetch)
        earlier_ids = _ids(earlier_output)
        if earlier_ids and earlier_ids <= _ids(items):
            break  # this answer's input already holds the earlier turns
        current, output, previous = previous, earlier_output, earlier_previous
    seen: set[str] = set()
    out: list[Any] = []
    for items, produced in reversed(turns):
        for item in (*items, *produced):
            item_id = item.get("id") if isinstance(item, dict) else None
            if isinstance(item_id, str):
                if item_id in seen:
                    continue
                seen.add(item_id)
            portable = _portable(item)
            if portable is not None:
                out.append(portable)
    return out


class Responses:
    name = NAME
    operation = "chat"
    provider_api = "openai"
    paths: tuple[str, ...] = ("/v1/responses",)
    upstream_path = "/responses"
    sse_errors = True
    session_headers: tuple[str, ...] = ()
    checks_answers = False
    state_endpoints: tuple[tuple[str, str], ...] = (
        ("GET", ""),
        ("DELETE", ""),
        ("POST", "/cancel"),
        ("GET", "/input_items"),
    )
    state_prefix = "/v1/responses"
    upstream_state_prefix = "/responses"

    def parse(self, body: dict[str, Any]) -> ResponsesRequest:
        _check(body)
        return ResponsesRequest(body)

    def decode_body(self, body: bytes) -> Answer | None:
        return decode_body(body)

    def stream_decoder(self) -> ResponsesStream:
        return ResponsesStream()

    def error_body(
        self, message: str, kind: ErrorKind, code: str, param: str | None = None
    ) -> dict[str, Any]:
        return error_body(message, kind, code, param)

    def stream_error(self, message: str, kind: ErrorKind, code: str) -> bytes:
        return stream_error(message, kind, code)

    async def history(self, state_id: str, fetch: StateFetch) -> list[Any]:
        return await history(state_id, fetch)


DIALECT: Final = Responses()
if TYPE_CHECKING:  # mypy holds the module to the protocol it is used through
    _STATEFUL: StatefulDialect = DIALECT
