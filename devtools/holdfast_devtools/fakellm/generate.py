"""Deterministic content: replies, tool-call arguments, embeddings and token counts.

Everything is a pure function of the request and the model name, so a test can predict a reply
and check a proxy's token accounting exactly.

- Prompt tokens: a token is a run of word characters or one other non-space character
  (regex ``\\w+|[^\\w\\s]``), counted over each message's text (string content, or the
  ``text`` of its content parts), plus 3 per message. Embedding inputs use the same count
  without the per-message 3.
- Reply: piece 1 is ``[<model>]``, the rest are words from ``WORDS`` picked by blake2b of the
  model and the last user message. Each piece is one completion token and one streamed chunk.
- System-prompt marker: when a system (or developer) message contains ``[[fakellm:json]]``,
  the text reply is the same pieces as a JSON object ``{"reply": "<pieces joined>"}`` (the
  first piece opens it, the last closes it: same piece count, tokens and chunks). A test can
  tell a prompt that asks for JSON from one that does not, as a real model would.
- Tool call: one call; its arguments are built from the tool's JSON Schema (``schema_value``)
  and stream in ``ARG_FRAGMENT_CHARS``-sized fragments; completion tokens = 1 (the chunk that
  names the function) + the number of fragments. With ``parallel_tool_calls`` on, every tool
  the last user message names as ``call:<name>`` is called, in that order (one after the other
  in a stream, as OpenAI and Anthropic stream parallel calls).
- A request whose last message is a tool's result is answered in text: a model given its
  tool's result does not call the tool again (so an agent's tool loop ends).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

_WORD_TEXT: Final = (
    "amber basalt cedar delta ember fjord granite harbor island juniper kestrel lagoon meadow "
    "nectar orchid pebble quartz raven sierra tundra umber valley willow xenon yarrow zephyr "
    "anchor beacon canyon dune estuary falcon glacier heron iris jasper kelp lantern marsh "
    "nimbus oasis prairie quill reef saffron thistle upland vesper wharf yonder zenith acorn "
    "breeze coral drift echo fern grove hollow inlet lichen moss nettle opal"
)
WORDS: Final = tuple(_WORD_TEXT.split())
PER_MESSAGE_TOKENS: Final = 3
ARG_FRAGMENT_CHARS: Final = 6
MAX_SCHEMA_DEPTH: Final = 4
_TOKEN_RE: Final = re.compile(r"\w+|[^\w\s]")
_CALL_RE: Final = re.compile(r"call:([\w-]+)")
_SPACED_WORDS: Final = tuple(" " + word for word in WORDS)
JSON_MARKER: Final = "[[fakellm:json]]"
_SYSTEM_ROLES: Final = frozenset({"system", "developer"})


def count_tokens(text: str) -> int:
    return len(_TOKEN_RE.findall(text))


def message_text(content: object) -> str:
    """The text of a message's ``content``: a string, or the ``text`` of its content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def prompt_tokens(messages: Sequence[Mapping[str, object]]) -> int:
    return sum(count_tokens(message_text(m.get("content"))) + PER_MESSAGE_TOKENS for m in messages)


def asks_for_json(messages: Sequence[Mapping[str, object]]) -> bool:
    """Whether a system or developer message carries ``JSON_MARKER``."""
    return any(
        m.get("role") in _SYSTEM_ROLES and JSON_MARKER in message_text(m.get("content"))
        for m in messages
    )


def as_json_pieces(pieces: tuple[str, ...]) -> tuple[str, ...]:
    """``pieces`` rewritten so that they concatenate to ``{"reply": "<pieces joined>"}``."""
    escaped = [json.dumps(p)[1:-1] for p in pieces]
    escaped[0] = '{"reply": "' + escaped[0]
    escaped[-1] += '"}'
    return tuple(escaped)


def _key(parts: tuple[str, ...]) -> bytes:
    # surrogatepass: JSON may carry lone surrogates, which must hash, not raise.
    return "\x00".join(parts).encode("utf-8", "surrogatepass")


def _byte_stream(*parts: str) -> Iterator[int]:
    """An endless, reproducible stream of bytes keyed by ``parts`` (a blake2b chain)."""
    digest = hashlib.blake2b(_key(parts), digest_size=64).digest()
    while True:
        yield from digest
        digest = hashlib.blake2b(digest, digest_size=64).digest()


def seed_of(*parts: str) -> int:
    return int.from_bytes(hashlib.blake2b(_key(parts), digest_size=8).digest())


def reply_pieces(model: str, user_text: str, count: int) -> tuple[str, ...]:
    """``count`` reply pieces: the model tag, then hash-chosen words (each with its space)."""
    stream = _byte_stream(model, user_text)
    words = (_SPACED_WORDS[next(stream) % len(WORDS)] for _ in range(count - 1))
    return (f"[{model}]", *words)


def schema_value(schema: object, seed: int, depth: int) -> object:
    """A deterministic value that satisfies the common parts of a JSON Schema.

    Honoured: const, enum, type (first non-null of a list), properties (all of them, so the
    required ones are always there), items/minItems, minimum/maximum, minLength/maxLength.
    anyOf/oneOf/allOf use their first branch; format and pattern are not honoured.
    """
    if not isinstance(schema, dict):
        return _word(seed)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[seed % len(enum)]
    for key in ("anyOf", "oneOf", "allOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            return schema_value(branches[0], seed, depth)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        return _object_value(schema, seed, depth)
    if kind == "array":
        return _array_value(schema, seed, depth)
    if kind in ("integer", "number"):
        return _int_value(schema, seed) if kind == "integer" else float(_int_value(schema, seed))
    if kind == "boolean":
        return seed % 2 == 0
    if kind == "null":
        return None
    return _string_value(schema, seed)


def _object_value(schema: Mapping[str, object], seed: int, depth: int) -> dict[str, object]:
    properties = schema.get("properties")
    if not isinstance(properties, dict) or depth >= MAX_SCHEMA_DEPTH:
        return {}
    return {
        str(name): schema_value(sub, seed ^ zlib.crc32(str(name).encode()), depth + 1)
        for name, sub in properties.items()
    }


def _array_value(schema: Mapping[str, object], seed: int, depth: int) -> list[object]:
    min_items = schema.get("minItems")
    count = max(1, min_items if isinstance(min_items, int) else 1)
    if depth >= MAX_SCHEMA_DEPTH:
        return []
    items = schema.get("items")
    return [schema_value(items, seed + i, depth + 1) for i in range(count)]


def _int_value(schema: Mapping[str, object], seed: int) -> int:
    minimum, maximum = schema.get("minimum"), schema.get("maximum")
    low = math.ceil(minimum) if isinstance(minimum, int | float) else 0
    high = math.floor(maximum) if isinstance(maximum, int | float) else low + 99
    return low + seed % (max(high, low) - low + 1)


def _string_value(schema: Mapping[str, object], seed: int) -> str:
    text = f"{_word(seed)}-{_word(seed >> 8)}"
    min_length, max_length = schema.get("minLength"), schema.get("maxLength")
    if isinstance(min_length, int) and len(text) < min_length:
        text = text.ljust(min_length, "x")
    if isinstance(max_length, int):
        text = text[:max_length]
    return text


def _word(seed: int) -> str:
    return WORDS[seed % len(WORDS)]


def embedding(model: str, text: str, dimensions: int) -> list[float]:
    """A unit vector keyed by model and text (two hash bytes per component)."""
    stream = _byte_stream("embedding", model, text)
    raw = [(next(stream) << 8 | next(stream)) / 32768.0 - 1.0 for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatRequest:
    """What a reply is derived from (``protocol.parse_chat`` builds it from the request JSON)."""

    model: str
    user_text: str  # text of the last user message
    prompt_tokens: int
    stream: bool
    include_usage: bool
    max_tokens: int | None
    tools: Mapping[str, object]  # declared function name -> its parameters schema
    tool_choice: str | None  # "none", "auto", "required", or a forced function's name
    reply_json: bool = False  # a system message carries JSON_MARKER


def pick_tool(request: ChatRequest, tool_calls_on: bool) -> str | None:
    """Which declared tool to call, or None for a text reply.

    A forced tool_choice wins; otherwise "call:<name>" in the last user message names the tool;
    otherwise, when tool calls are on (or tool_choice is "required"), a hash of the model and the
    user text picks one of the declared tools.
    """
    if not request.tools or request.tool_choice == "none":
        return None
    if request.tool_choice in request.tools:
        return request.tool_choice
    for match in _CALL_RE.finditer(request.user_text):
        if match.group(1) in request.tools:
            return match.group(1)
    if tool_calls_on or request.tool_choice == "required":
        names = list(request.tools)
        return names[seed_of(request.model, request.user_text) % len(names)]
    return None


def pick_tools(request: ChatRequest, tool_calls_on: bool, parallel: bool) -> list[str]:
    """Every tool to call: ``pick_tool``'s, or with ``parallel`` every ``call:<name>`` of the
    last user message that names a declared tool (in order, each once)."""
    if parallel and request.tools and request.tool_choice != "none":
        named = [m.group(1) for m in _CALL_RE.finditer(request.user_text)]
        found = list(dict.fromkeys(n for n in named if n in request.tools))
        if len(found) > 1:
            return found
    tool = pick_tool(request, tool_calls_on)
    return [tool] if tool is not None else []


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    deltas: tuple[Mapping[str, object], ...]  # one streamed chunk (and completion token) each
    message: Mapping[str, object]  # the non-streaming choice's message
    finish_reason: str

    @property
    def completion_tokens(self) -> int:
        return len(self.deltas)


def compose_reply(
    request: ChatRequest, *, length: int, tool_calls_on: bool, parallel: bool = False
) -> Reply:
    """The reply: tool calls when ``pick_tools`` names any, else ``length`` text pieces (fewer,
    with finish_reason "length", when max_tokens is lower). Tool calls ignore max_tokens.
    """
    tools = pick_tools(request, tool_calls_on, parallel)
    if tools:
        return _tool_reply(request, tools)
    finish = "stop"
    if request.max_tokens is not None and request.max_tokens < length:
        length, finish = request.max_tokens, "length"
    pieces = reply_pieces(request.model, request.user_text, length)
    if request.reply_json:
        pieces = as_json_pieces(pieces)
    message = {"role": "assistant", "content": "".join(pieces)}
    return Reply(
        deltas=tuple({"content": p} for p in pieces), message=message, finish_reason=finish
    )


def tool_arguments(request: ChatRequest, name: str) -> tuple[int, str]:
    """A call's seed and its arguments: always a JSON object, whatever the schema says."""
    seed = seed_of(request.model, request.user_text, name)
    schema = request.tools[name]
    values = _object_value(schema, seed, 0) if isinstance(schema, Mapping) else {}
    return seed, json.dumps(values, separators=(",", ":"))


def _tool_reply(request: ChatRequest, names: Sequence[str]) -> Reply:
    deltas: list[Mapping[str, object]] = []
    tool_calls: list[dict[str, object]] = []
    for index, name in enumerate(names):
        seed, arguments = tool_arguments(request, name)
        call_id = f"call_{seed:016x}"
        head = {"index": index, "id": call_id, "type": "function"}
        deltas.append({"tool_calls": [{**head, "function": {"name": name, "arguments": ""}}]})
        for i in range(0, len(arguments), ARG_FRAGMENT_CHARS):
            fragment = arguments[i : i + ARG_FRAGMENT_CHARS]
            deltas.append({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
        function = {"name": name, "arguments": arguments}
        tool_calls.append({"id": call_id, "type": "function", "function": function})
    message = {"role": "assistant", "content": None, "tool_calls": tool_calls}
    return Reply(deltas=tuple(deltas), message=message, finish_reason="tool_calls")
