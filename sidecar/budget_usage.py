"""What a request may cost and what it did cost: estimators and usage readers. Pure.

Prompt estimators (``--budget-prompt-estimator``):

* ``bytes`` (default) -- the UTF-8 size of the JSON of the messages and tool definitions. BPE
  tokenizers (OpenAI, Anthropic, Llama...) never make a token of less than one byte, and the
  JSON syntax around each message outweighs the few formatting tokens a provider adds, so this
  is an upper bound: reservations are never short, and a fleet never over-admits.
* ``chars`` -- characters of the text / 4, plus 4 per message and 3 for the reply's priming
  (OpenAI's rule of thumb). Closer to the truth, so less is held back near the limit; but it
  can be short for text that tokenizes badly, and that shortfall can then be overspent.

Completions: the provider's ``usage`` when it sends one. Without it (a stream cut by the client
or the provider, a provider that never reports usage) each relayed chunk that carries content,
a refusal or a tool-call fragment counts one token -- how OpenAI-style providers stream -- and
the charge is marked estimated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from sidecar.provider_json import provider_json

Estimator = Literal["bytes", "chars"]
ESTIMATORS: Final = ("bytes", "chars")
PER_MESSAGE: Final = 4
REPLY_PRIMING: Final = 3
MAX_CHOICES: Final = 128
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
    """The most completion tokens the request allows over all choices (None: no cap sent)."""
    cap = _positive_int(body, "max_completion_tokens") or _positive_int(body, "max_tokens")
    n = _positive_int(body, "n") or 1
    if n > MAX_CHOICES:
        raise UsageError(f"'n' must be at most {MAX_CHOICES}", "n")
    return None if cap is None else cap * n


def usage_of(obj: object) -> Usage | None:
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", 0)
    completion = usage.get("completion_tokens", 0)
    if not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (prompt, completion)
    ):
        return None
    return Usage(prompt, completion)


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
    usage = usage_of(obj)
    return StreamEvent(tokens, usage, usage is not None and not choices)
