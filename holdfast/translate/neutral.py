"""The neutral conversation every API is read into and written from: a request (system text,
turns of typed parts, tools, caps), a whole answer, and the events of a streamed one. Pure.

Each API module (``chat``, ``messages``, ``responses``) reads its own shape into these types and
writes them back out; a pair of dialects is one reader and one writer
(holdfast.translate.pairs). Everything that crosses carries ``where``: the agent's own name for
it (``messages[3].content[1]``), so a refusal names what the agent sent, in its own terms.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from holdfast.dialects.base import MAX_USAGE_TOKENS, Usage


class Untranslatable(ValueError):
    """What the agent sent has no faithful counterpart in the provider's API: a 400 in the
    agent's dialect naming ``param`` (the agent's field), never a silent drop."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class BadAnswer(ValueError):
    """The provider's answer cannot be carried into the agent's API (a 502 to the agent)."""


# -- usage ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tokens:
    """A provider's usage with every count both sides may name. ``prompt`` is the whole prompt
    (cache reads and writes included), ``output`` the whole output (reasoning included)."""

    prompt: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0
    reasoning: int = 0

    @property
    def usage(self) -> Usage:
        return Usage(self.prompt, self.output)


def count(value: object) -> int | None:
    """A token count a provider reported, or None when it is not a sane whole number."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_USAGE_TOKENS:
        return value
    return None


# -- a request -----------------------------------------------------------------------------

PartKind = Literal["text", "image"]


@dataclass(frozen=True, slots=True)
class Part:
    """One piece of a turn's content: text, or an image (``url``: an https URL or a data URL;
    ``data``/``media_type``: base64 bytes)."""

    kind: PartKind
    text: str = ""
    url: str = ""
    data: str = ""
    media_type: str = ""
    detail: str = ""  # OpenAI's image detail ("auto", "low", "high"); "" when not given

    def data_url(self) -> str:
        return self.url or f"data:{self.media_type};base64,{self.data}"


@dataclass(frozen=True, slots=True)
class Call:
    """A tool call the model made: ``arguments`` is its JSON text as written."""

    id: str
    name: str
    arguments: str


Role = Literal["system", "user", "assistant", "tool"]


@dataclass(slots=True)
class Turn:
    """One turn: ``tool`` turns answer the call ``call_id``; assistant turns may carry calls."""

    role: Role
    parts: list[Part] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    call_id: str = ""
    error: bool = False  # a tool result the agent marked as an error (Anthropic's is_error)
    where: str = ""


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    parameters: object
    strict: bool | None = None


ChoiceKind = Literal["auto", "none", "required", "tool"]


@dataclass(frozen=True, slots=True)
class ToolChoice:
    kind: ChoiceKind
    name: str = ""  # the forced tool's, for "tool"


@dataclass(slots=True)
class Conversation:
    """A whole request, neutral. ``system`` texts come before every turn (a system turn in
    ``turns`` sits where the agent put it)."""

    model: str
    system: list[str] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_calls: bool | None = None  # False: at most one call per answer
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = False
    stream_usage: bool = False  # the agent asked its stream to end with usage
    user: str = ""  # the end user (OpenAI's user, Anthropic's metadata.user_id)
    reasoning_effort: str = ""  # OpenAI's reasoning effort, for an API that has one
    json_format: dict[str, object] | None = None  # OpenAI's response_format, for one that has it


# -- an answer -----------------------------------------------------------------------------

# Why an answer ended, neutral: "stop" (the model finished, or a stop sequence), "length" (the
# output cap), "tool_calls", "refusal" (the provider refused or filtered the content).
StopReason = Literal["stop", "length", "tool_calls", "refusal"]
STOP_REASONS: Final = ("stop", "length", "tool_calls", "refusal")


@dataclass(slots=True)
class Reply:
    """A whole answer: its text, its calls in order, why it ended, its usage."""

    id: str
    model: str
    text: str = ""
    calls: list[Call] = field(default_factory=list)
    stop: StopReason = "stop"
    stop_sequence: str = ""
    refusal: str = ""  # a refusal's text, where the provider says it apart from the text
    tokens: Tokens | None = None
    created: int = 0
    said: str = ""  # the provider's own word for why it stopped (traces show it as said)


# -- the events of a stream ----------------------------------------------------------------
# A reader turns each provider event into zero or more of these; a writer turns each into zero
# or more agent events. ``Opened`` always comes first and ``Closed`` or ``Failed`` last.


@dataclass(frozen=True, slots=True)
class Opened:
    id: str
    model: str
    tokens: Tokens | None = None  # the prompt's usage when the provider says it up front


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class RefusalDelta:
    text: str


@dataclass(frozen=True, slots=True)
class CallStarted:
    """A tool call begins; ``key`` tells the provider's calls apart (its index or block)."""

    key: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class CallDelta:
    key: int
    arguments: str


@dataclass(frozen=True, slots=True)
class CallEnded:
    key: int


@dataclass(frozen=True, slots=True)
class Finished:
    stop: StopReason
    stop_sequence: str = ""


@dataclass(frozen=True, slots=True)
class Reported:
    """Usage so far (cumulative: a later report replaces an earlier one)."""

    tokens: Tokens


@dataclass(frozen=True, slots=True)
class Closed:
    """The provider ended the stream whole."""


@dataclass(frozen=True, slots=True)
class Failed:
    """An in-band error from the provider: its message and status class."""

    message: str
    code: str = "upstream_error"


Event = (
    Opened
    | TextDelta
    | RefusalDelta
    | CallStarted
    | CallDelta
    | CallEnded
    | Finished
    | Reported
    | Closed
    | Failed
)


# What a writer hands the relay for one neutral event: bytes for the agent, and whether they
# only carry usage the agent may not have asked for (OpenAI chat's include_usage chunk).
Segment = tuple[bytes, bool]
