"""Pure comparison of a primary answer with its shadow's answer (no I/O, no event loop).

Definitions (the README quotes them):

- **Answer**: the first choice of an answer (any dialect): its text content, its tool calls as
  ``(function name, canonical arguments)`` pairs, and the ``usage`` token counts (0 when the
  provider reports none).
- **Text similarity** of two texts: ``difflib.SequenceMatcher(None, a, b, autojunk=False)
  .ratio()`` over their *word tokens* (the text split on whitespace), each side capped at its
  first 2,000 words. The ratio is 2·M / (|a| + |b|), M the number of words in matching blocks,
  so it lies in [0, 1]; two empty texts are identical (1.0), one empty text against a
  non-empty one is 0.0.
- **Canonical arguments**: the arguments string parsed as JSON and dumped again with sorted
  keys and no whitespace, so key order and spacing do not matter; a string that does not parse
  stays as it is.
- **Tool-call agreement**: the two answers agree when they made the same multiset of
  (name, canonical arguments) pairs, call ids and order ignored; two answers without tool
  calls agree (neither called a tool). ``tool_agree`` counts agreeing comparisons among all
  ``samples``, so the agreement rate is tool_agree / samples. A comparison where at least one
  side called a tool is also a *tool sample*; ``tool_samples`` counts those, so the rate among
  tool-calling answers alone is (tool_agree - (samples - tool_samples)) / tool_samples.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from holdfast import dialects
from holdfast.dialects import openai_chat
from holdfast.json_limits import provider_json

MAX_WORDS: Final = 2_000
ToolCall = tuple[str, str]  # (function name, canonical JSON arguments)


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class Comparison:
    similarity: float
    tool_sample: bool
    tools_agree: bool


class AnswerError(ValueError):
    """A body that is not a chat completion this module can read."""


def canonical_arguments(raw: str) -> str:
    parsed = provider_json(raw, "compare_arguments")
    if parsed is None:
        return raw
    return json.dumps(parsed, sort_keys=True, separators=(",", ":"))


def from_answer(answer: dialects.Answer) -> Answer:
    """What is compared of a decoded answer (its first choice); AnswerError if it has none."""
    if answer.choices == 0:
        raise AnswerError("the answer has no choice with a message")
    usage = answer.usage
    return Answer(
        text=answer.text,
        tool_calls=tuple(
            (c.name, canonical_arguments(c.arguments)) for c in answer.tool_calls if c.choice == 0
        ),
        prompt_tokens=usage.prompt if usage is not None else 0,
        completion_tokens=usage.completion if usage is not None else 0,
    )


def answer_from_completion(
    body: bytes | Mapping[str, Any], dialect: dialects.Dialect = openai_chat.DIALECT
) -> Answer:
    """The Answer of a whole answer in ``dialect`` (its first choice); AnswerError if none."""
    raw = body if isinstance(body, bytes | bytearray) else orjson.dumps(body)
    decoded = dialect.decode_body(bytes(raw))
    if decoded is None:
        raise AnswerError("not an answer: not JSON, nested too deep, or no choices")
    return from_answer(decoded)


def words(text: str) -> list[str]:
    # maxsplit bounds the work on a huge text: only the first MAX_WORDS words are kept anyway.
    return text.split(None, MAX_WORDS)[:MAX_WORDS]


def similarity(a: str, b: str) -> float:
    wa, wb = words(a), words(b)
    if not wa and not wb:
        return 1.0
    # Imported here: difflib is ~0.2 MB resident and only shadow comparisons use it.
    from difflib import SequenceMatcher

    return SequenceMatcher(None, wa, wb, autojunk=False).ratio()


def tools_agree(a: Answer, b: Answer) -> bool:
    return Counter(a.tool_calls) == Counter(b.tool_calls)


def compare(primary: Answer, shadow: Answer) -> Comparison:
    return Comparison(
        similarity=similarity(primary.text, shadow.text),
        tool_sample=bool(primary.tool_calls or shadow.tool_calls),
        tools_agree=tools_agree(primary, shadow),
    )


def comparison_cost(primary: Answer, shadow: Answer) -> int:
    """A rough size of the comparison, so a caller can move a large one off the event loop."""
    return min(len(primary.text), 16 * MAX_WORDS) + min(len(shadow.text), 16 * MAX_WORDS)
