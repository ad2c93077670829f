"""What an answer looked like for health signals: tokens, emptiness, refusal, the tools called.

Read from the dialect's neutral view of the answer (decoded once for every filter), whole or
event by event. Without provider usage, tokens are estimated: the prompt at 4 characters a
token, the completion from the answer's text (whole) or from its content-bearing deltas (a
stream sends about one token per delta).

Refusal heuristic: the provider flagged the answer as a refusal, or the first ``HEAD_CHARS``
characters of its text contain one of ``REFUSAL_PHRASES``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from holdfast.dialects import Answer, EventView, RequestView, ToolCall, Usage

HEAD_CHARS: Final = 120
MAX_TOOL_NAMES: Final = 16
REFUSAL_PHRASES: Final = (
    "i'm sorry",
    "i am sorry",
    "i can't help",
    "i cannot help",
    "i can't assist",
    "i cannot assist",
    "i'm unable to",
    "i am unable to",
    "i won't be able to",
    "as an ai",
)


@dataclass(frozen=True, slots=True)
class Summary:
    tokens_in: int
    tokens_out: int
    usage_known: bool  # reported by the provider (else estimated)
    empty: bool
    refusal: bool
    tools: tuple[str, ...]


NO_ANSWER: Final = Summary(
    tokens_in=0, tokens_out=0, usage_known=False, empty=False, refusal=False, tools=()
)


def looks_like_refusal(head: str) -> bool:
    text = head[:HEAD_CHARS].lower().replace("\u2019", "'")
    return any(phrase in text for phrase in REFUSAL_PHRASES)


def _names(calls: Sequence[ToolCall]) -> list[str]:
    return [c.name[:64] for c in calls if c.choice == 0 and c.name][:MAX_TOOL_NAMES]


def _tokens(usage: Usage | None, request: RequestView, completion: int) -> tuple[int, int, bool]:
    if usage is None:
        return (request.text_chars() + 3) // 4, completion, False
    return usage.prompt, usage.completion, True


def of_answer(answer: Answer, request: RequestView) -> Summary:
    """A whole answer's summary."""
    tools = _names(answer.tool_calls)
    tin, tout, known = _tokens(answer.usage, request, (len(answer.text) + 3) // 4)
    return Summary(
        tokens_in=tin,
        tokens_out=tout,
        usage_known=known,
        empty=not answer.text.strip() and not tools,
        refusal=answer.refusal or looks_like_refusal(answer.text),
        tools=tuple(tools),
    )


class StreamSummary:
    """Fed each event's view as the stream is relayed; ``summary()`` at the end."""

    __slots__ = ("content", "head", "refusal", "texts", "tools", "usage")

    def __init__(self) -> None:
        self.content = 0  # content-bearing deltas: the completion-token estimate
        self.texts = 0  # events with text in the first choice
        self.head = ""
        self.tools: list[str] = []
        self.usage: Usage | None = None
        self.refusal = False

    def feed(self, view: EventView) -> None:
        self.content += view.content
        if view.text:
            self.texts += 1
            if len(self.head) < HEAD_CHARS:
                self.head += view.text
        if view.refusal:
            self.refusal = True
        if view.usage is not None:
            self.usage = view.usage
        if view.calls:
            self.calls(view.calls)

    def calls(self, calls: Sequence[ToolCall]) -> None:
        if len(self.tools) < MAX_TOOL_NAMES:
            self.tools.extend(_names(calls))

    def summary(self, request: RequestView) -> Summary:
        tin, tout, known = _tokens(self.usage, request, self.content)
        return Summary(
            tokens_in=tin,
            tokens_out=tout,
            usage_known=known,
            empty=self.texts == 0 and not self.tools,
            refusal=self.refusal or looks_like_refusal(self.head),
            tools=tuple(self.tools[:MAX_TOOL_NAMES]),
        )
