"""What a request may cost and what it did cost: estimators and usage readers. Pure.

Prompt estimators (``--budget-prompt-estimator``):

* ``bytes`` (default) -- the UTF-8 size of the JSON of the messages and tool definitions. BPE
  tokenizers (OpenAI, Anthropic, Llama...) never make a token of less than one byte, and the
  JSON syntax around each message outweighs the few formatting tokens a provider adds, so this
  is an upper bound: reservations are never short, and a fleet never over-admits.
* ``chars`` -- characters of the text / 4, plus 4 per message and 3 for the reply's priming
  (OpenAI's rule of thumb). Closer to the truth, so less is held back near the limit; but it
  can be short for text that tokenizes badly, and that shortfall can then be overspent.

Completions: the provider's ``usage`` when it sends one (read by
``sidecar.provider_json.usage_counts``: absurd counts are no usage). Without it (a stream cut
by the client or the provider, a provider that never reports usage) each relayed chunk that
carries content, a refusal or a tool-call fragment counts one token -- how OpenAI-style
providers stream -- and the charge is marked estimated.

Caps: ``max_completion_tokens`` and ``max_tokens`` are both read; one written cap goes into
the field ``cap_field`` picks, and the other is dropped, so a provider never gets both.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from sidecar.upstream.provider_json import provider_json, usage_counts

Estimator = Literal["bytes", "chars"]
PER_MESSAGE: Final = 4
REPLY_PRIMING: Final = 3
MAX_CHOICES: Final = 128
CAP_FIELDS: Final = ("max_completion_tokens", "max_tokens")
OPENAI_API_HOST: Final = "api.openai.com"
_DELTA_FIELDS: Final = ("content", "refusal", "tool_calls", "function_call", "reasoning_content")


class UsageError(ValueError):
    """The request's own limits cannot be read (e.g. ``max_tokens`` is not a whole number)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class Usage:
    prompt: int
    completion: int

    @property
    def total(self) -> int:
        return self.prompt + self.completion


def _text_chars(content: object) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(
            len(p["text"])
            for p in content
            if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return 0


def estimate_prompt(body: Mapping[str, Any], operation: str, estimator: Estimator) -> int:
    """Tokens the prompt may take (an upper bound with ``bytes``)."""
    if operation == "embeddings":
        parts: object = body.get("input", "")
    else:
        parts = [body.get("messages", []), body.get("tools"), body.get("functions")]
    if estimator == "bytes":
        return len(json.dumps(parts, ensure_ascii=False, separators=(",", ":")).encode())
    if operation == "embeddings":
        items = parts if isinstance(parts, list) else [parts]
        return sum(math.ceil(len(str(i)) / 4) + 1 for i in items)
    messages = body.get("messages", [])
    if not isinstance(messages, list):
        messages = []
    chars = sum(_text_chars(m.get("content")) for m in messages if isinstance(m, dict))
    tools = body.get("tools")
    chars += len(json.dumps(tools)) if tools else 0
    return math.ceil(chars / 4) + PER_MESSAGE * len(messages) + REPLY_PRIMING


def _positive_int(body: Mapping[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UsageError(f"{name!r} must be a positive integer", name)
    return value


def completion_cap(body: Mapping[str, Any]) -> int | None:
    """The most completion tokens the request allows over all choices (None: no cap sent).

    With both fields sent, the larger counts: which one a provider honours is its business.
    """
    caps = [c for c in (_positive_int(body, name) for name in CAP_FIELDS) if c is not None]
    n = _positive_int(body, "n") or 1
    if n > MAX_CHOICES:
        raise UsageError(f"'n' must be at most {MAX_CHOICES}", "n")
    return max(caps) * n if caps else None


def choice_cap(body: Mapping[str, Any]) -> int | None:
    """The per-choice completion cap the request sends, if a valid one (never raises)."""
    try:
        caps = [c for c in (_positive_int(body, name) for name in CAP_FIELDS) if c is not None]
    except UsageError:
        return None
    return max(caps) if caps else None


def cap_field(body: Mapping[str, Any], base_url: str) -> str:
    """The field a cap is written into: the one the agent named (even as null), else
    ``max_completion_tokens`` for OpenAI's own API (``max_tokens`` is deprecated there and
    refused by reasoning models) and ``max_tokens`` for other OpenAI-compatible servers,
    many of which know no other."""
    for name in CAP_FIELDS:
        if name in body:
            return name
    return (
        "max_completion_tokens" if urlsplit(base_url).hostname == OPENAI_API_HOST else "max_tokens"
    )


def write_cap(body: dict[str, Any], cap: int, base_url: str) -> str:
    """Write the per-choice ``cap`` into one field and drop the other (never both); returns
    the field written."""
    name = cap_field(body, base_url)
    for other in CAP_FIELDS:
        body.pop(other, None)
    body[name] = cap
    return name


def usage_of(obj: object, where: str = "budget_usage") -> Usage | None:
    counts = usage_counts(obj, where)
    return None if counts is None else Usage(*counts)


def body_usage(body: bytes) -> Usage | None:
    return usage_of(provider_json(body, "budget_usage"))


def content_tokens(text: str) -> int:
    """Estimated tokens of a reply text we could read but that came without usage."""
    return math.ceil(len(text) / 4)


def reply_estimate(body: bytes) -> int:
    """Completion tokens of a non-streamed answer without usage, from its choices' text."""
    obj = provider_json(body, "budget_estimate")
    choices = obj.get("choices") if isinstance(obj, dict) else None
    if not isinstance(choices, list):
        return 0
    total = 0
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            total += content_tokens(str(message.get("content") or ""))
            if message.get("tool_calls"):
                total += content_tokens(json.dumps(message["tool_calls"]))
    return total


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """What one SSE event means for accounting."""

    tokens: int  # content-bearing deltas in it
    usage: Usage | None  # set on the usage chunk
    usage_only: bool  # a chunk with usage and no choices: the one include_usage adds


NOTHING: Final = StreamEvent(0, None, False)


def read_event(event: bytes) -> StreamEvent:
    """Parse one ``data: {...}`` event; anything else (comments, [DONE], errors) counts nothing."""
    start = event.find(b"data:")
    if start < 0:
        return NOTHING
    payload = event[start + 5 :].strip()
    if not payload.startswith(b"{"):
        return NOTHING
    obj = provider_json(payload, "budget_event")
    if not isinstance(obj, dict):
        return NOTHING
    choices = obj.get("choices")
    tokens = 0
    if isinstance(choices, list):
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict) and any(delta.get(f) for f in _DELTA_FIELDS):
                tokens += 1
    usage = usage_of(obj, "budget_event")
    # Rejected usage (absurd counts) still marks the chunk include_usage added: it is stripped
    # all the same for an agent that did not ask for it.
    usage_only = isinstance(obj.get("usage"), dict) and not choices
    return StreamEvent(tokens, usage, usage_only)
