"""The dialect seam: what every provider API tells the sidecar, and the neutral view filters read.

A *dialect* is one HTTP API that agents speak and providers serve (OpenAI chat completions, OpenAI
embeddings, ...). Everything protocol-specific lives in its module: the endpoint paths, where a
request keeps its model, messages, tools, output cap and session hint, how usage, text and tool
calls appear in an answer and in stream events, and the error shape. Filters (budgets, contracts,
prompts, signals, shadow) read only the neutral types here and never name a wire field.

Pure: no I/O. A request view edits its own body in place (the body is what goes upstream).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, cast

from holdfast.logs import get_logger

log = get_logger(__name__)

Estimator = Literal["tokens", "bytes", "chars"]
# A neutral error class; each dialect names it in its own error shape (see ``error_body``).
ErrorKind = Literal["invalid_request", "not_found", "quota", "upstream", "service"]

# No single answer comes near this; a count above it is a broken or hostile provider, and
# taken at face value it would overflow spend reports (limit 10^15) and health snapshots.
MAX_USAGE_TOKENS: Final = 10**9
# Provider usage refused as absurd since start, by dialect and where it was read (/metrics).
USAGE_REJECTED: Counter[str] = Counter()


class RequestRefused(ValueError):
    """The request cannot be served as sent (``param`` names the field); a 400 to the agent."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens the provider says an answer took (both 0..MAX_USAGE_TOKENS)."""

    prompt: int
    completion: int

    @property
    def total(self) -> int:
        return self.prompt + self.completion


def checked_usage(prompt: object, completion: object, where: str) -> Usage | None:
    """``Usage`` when both counts are whole numbers in range; else None, counted and logged, so
    callers fall back to their estimate instead of charging or publishing an absurd number.
    A missing count (None) is 0, but at least one must be there."""
    if prompt is None and completion is None:
        return None
    p = 0 if prompt is None else prompt
    c = 0 if completion is None else completion
    if all(
        isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_USAGE_TOKENS
        for n in (p, c)
    ):
        return Usage(p, c)  # type: ignore[arg-type]
    USAGE_REJECTED[where] += 1
    log.info(
        "provider_usage_rejected",
        where=where,
        prompt_tokens=repr(p)[:24],
        completion_tokens=repr(c)[:24],
    )
    return None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One complete tool call a model made: ``choice`` and ``index`` place it in the answer."""

    choice: int
    index: int
    name: str
    arguments: str  # the JSON text as the model wrote it
    truncated: bool = False  # arguments grew past the dialect's bound and were cut


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole (non-streamed) answer, decoded once for every filter."""

    text: str  # the first choice's text
    tool_calls: tuple[ToolCall, ...]  # every choice's
    usage: Usage | None
    refusal: bool  # the provider flagged the first choice as a refusal
    completion_estimate: int  # tokens of every choice's text and calls, for when usage is None
    choices: int = 1  # choices that carried a message (0: the provider answered none)
    # The id of provider-held state this answer created (OpenAI Responses' response id), "" when
    # the dialect keeps none: the sidecar records which release issued it (``StatefulDialect``).
    issued: str = ""
    # What the provider said about the answer, as it said it (traces show them; "" or (): not
    # sent): each choice's reason to stop, the model that answered, the answer's id.
    finish_reasons: tuple[str, ...] = ()
    response_model: str = ""
    response_id: str = ""


@dataclass(slots=True)
class EventView:
    """What one stream event carried, decoded once for every filter."""

    text: str = ""  # text of the first choice in this event
    content: int = 0  # choices whose delta carried content, a refusal or a tool-call fragment
    refusal: bool = False
    calls: Sequence[ToolCall] = ()  # tool calls this event completed
    usage: Usage | None = None
    usage_only: bool = False  # added only to carry usage (see ``RequestView.ask_stream_usage``)
    error: bool = False  # an in-band error from the provider
    done: bool = False  # the dialect's end-of-stream marker
    issued: str = ""  # the id of provider-held state this event announced (see ``Answer.issued``)
    # Not an event of this dialect at all (another API's stream at that base_url): the relay
    # ends the stream with an in-band error instead (dialects with ``checks_answers``).
    foreign: bool = False
    # As in ``Answer``: reasons to stop of the choices that ended in this event; the answering
    # model and the answer's id, on the first event that names them (a decoder says them once).
    finish_reasons: tuple[str, ...] = ()
    response_model: str = ""
    response_id: str = ""


NO_EVENT: Final = EventView()


class StreamDecoder(Protocol):
    """Decodes one streamed answer, event by event, as the sidecar relays it."""

    def feed(self, event: bytes) -> EventView:
        """One whole SSE event (its blank line included); NO_EVENT-like when it carries nothing."""
        ...

    def skim(self, chunk: bytes) -> EventView | None:
        """``chunk``'s view, as ``feed`` would give it, when a pattern match proves without
        parsing that it is exactly one whole event of the dialect's plain kind (a text delta,
        most of a stream); None otherwise -- then split it and ``feed`` each event. Cheap
        enough to try on every chunk; a pattern never accepts what ``feed`` would read more
        from (usage, tool calls, reasons to stop, errors) or refuse."""
        ...

    @property
    def open_calls(self) -> list[str]:
        """Names of the tool calls still arriving ("" while a call's name has not come yet)."""
        ...

    def finish(self) -> list[ToolCall]:
        """The stream ended: every call still open is complete."""
        ...


@dataclass(frozen=True, slots=True)
class DeclaredTool:
    """A tool the agent declares in its request; ``replace`` swaps in another parameters schema."""

    name: str
    parameters: Any
    replace: Callable[[Any], None]


@dataclass(frozen=True, slots=True)
class SystemSlot:
    """A system instruction of the request whose whole text is ``text``; ``where`` names it for
    a person (e.g. ``messages[2]``)."""

    position: int
    text: str
    where: str


class RequestView(Protocol):
    """A request in the dialect's shape, seen and edited through neutral questions."""

    body: dict[str, Any]  # what goes upstream; edited in place

    @property
    def model(self) -> str: ...

    def set_model(self, model: str) -> None: ...

    @property
    def stream(self) -> bool: ...

    @property
    def session_hint(self) -> str | None:
        """A session id the body itself carries (e.g. OpenAI's ``user``), if any."""
        ...

    def output_cap(self) -> tuple[int | None, int]:
        """(the per-choice output cap sent, or None; the number of choices asked for).

        Raises RequestRefused when a cap or the choice count is not a usable number."""
        ...

    def write_output_cap(self, cap: int, base_url: str) -> str:
        """Write a per-choice cap into the one field the provider honours; returns its name."""
        ...

    def ask_stream_usage(self) -> bool:
        """Make a stream end with usage; True when the agent had asked for it itself (else the
        decoder marks the event that only carries it ``usage_only``, to be dropped)."""
        ...

    def prompt_estimate(self, estimator: Estimator) -> int:
        """Tokens the prompt may take: an upper bound with ``tokens`` (the model family's
        tokenizer, holdfast.dialects.estimate; ``bytes`` without one) and ``bytes``, closer
        but possibly short with ``chars``."""
        ...

    def text_chars(self) -> int:
        """Characters of the conversation's text (a rough size when nothing else is known)."""
        ...

    def last_user_text(self, limit: int) -> str:
        """The head (``limit`` characters) of the last user turn's text."""
        ...

    def declared_tools(self) -> list[DeclaredTool]: ...

    @property
    def system_field(self) -> str:
        """The body field that holds system instructions (an error's ``param``)."""
        ...

    def system_slots(self) -> list[SystemSlot]:
        """Every system instruction whose content is one text (prompt references live there)."""
        ...

    def set_system(self, position: int, text: str) -> None: ...

    def insert_system(self, text: str) -> None:
        """Put a system instruction with ``text`` before everything else."""
        ...

    def shadow_copy(self, model: str) -> dict[str, Any]:
        """The body a shadow release is sent: this request, for ``model``, not streamed."""
        ...


class Dialect(Protocol):
    """One provider API. See holdfast.dialects for the registry."""

    name: str  # e.g. "openai.chat"
    operation: str  # the neutral kind: "chat" (generation) or "embeddings"
    provider_api: str  # which provider kind serves it (``Release.provider``)
    paths: tuple[str, ...]  # where agents send it on the sidecar (aiohttp route paths)
    upstream_path: str  # where it goes, relative to a release's ``base_url``
    sse_errors: bool  # streams report errors in-band
    # Request headers that name the session when X-Holdfast-Session is absent, tried in order
    # before the body's ``session_hint`` (Claude Code's X-Claude-Code-Session-Id); () for none.
    session_headers: tuple[str, ...]
    # A 2xx answer this dialect cannot decode is the provider's failure (another API at that
    # base_url, a broken body): the agent gets a 502 in its own shape instead of the body.
    # False relays such a body untouched (OpenAI chat's behaviour before this flag).
    checks_answers: bool

    def parse(self, body: dict[str, Any]) -> RequestView:
        """A view over a parsed JSON object; RequestRefused when it is not this API's request."""
        ...

    def decode_body(self, body: bytes) -> Answer | None:
        """A whole answer; None when ``body`` is not one this dialect can read."""
        ...

    def stream_decoder(self) -> StreamDecoder: ...

    def error_body(
        self, message: str, kind: ErrorKind, code: str, param: str | None = None
    ) -> dict[str, Any]:
        """The dialect's error object for a refusal or failure."""
        ...

    def stream_error(self, message: str, kind: ErrorKind, code: str) -> bytes:
        """An in-band error event for a stream whose headers are already sent."""
        ...


# -- Provider-held state (OpenAI Responses) ----------------------------------------------------
# Some APIs keep a conversation at the provider and let the next request name it by id instead
# of resending it. Only the release (provider and key) that issued an id holds that state, so
# the sidecar must know which release issued each id and route a continuation there. A dialect
# whose requests can do that implements ``StatefulDialect`` (its views ``StatefulRequest``); the
# others need not know these exist.

StateKind = Literal["response", "conversation"]


@dataclass(frozen=True, slots=True)
class StateRef:
    """Provider-held state a request continues: ``id`` of ``kind``, sent in body field ``param``."""

    id: str
    kind: StateKind
    param: str


# Fetches a path of the release that issued some state (relative to its ``base_url``): the body
# of a 2xx answer, or None when the provider has no such thing (404); other failures raise.
StateFetch = Callable[[str], Awaitable[bytes | None]]


class StateGone(Exception):
    """The provider no longer holds the state (expired, deleted, or never stored)."""


class StatefulRequest(RequestView, Protocol):
    """A request of a dialect whose provider keeps conversation state by id."""

    def state_ref(self) -> StateRef | None:
        """The provider-held state this request continues, if any."""
        ...

    @property
    def stores(self) -> bool:
        """The provider keeps this request's answer, so a later request may continue it."""
        ...

    def self_contained(self, history: list[Any]) -> None:
        """Make the request stand alone: drop its state reference, put ``history`` (the
        conversation so far, as the dialect's input items) before its own input."""
        ...


class StatefulDialect(Dialect, Protocol):
    """A dialect with provider-held state: the endpoints that read or change it by id, and how
    to rebuild a conversation from it (for a session an operator migrated)."""

    # (method, suffix) of the endpoints on ``state_prefix + "/{id}" + suffix``; each is relayed
    # to ``upstream_state_prefix + "/{id}" + suffix`` of the release that issued the id
    state_endpoints: tuple[tuple[str, str], ...]
    state_prefix: str  # on the sidecar, e.g. "/v1/responses"
    upstream_state_prefix: str  # relative to a release's base_url, e.g. "/responses"

    def parse(self, body: dict[str, Any]) -> StatefulRequest: ...

    async def history(self, state_id: str, fetch: StateFetch) -> list[Any]:
        """The conversation that ``state_id`` ends, as input items a request can carry to another
        release (outputs included; what only the issuing provider understands, such as its item
        ids and reasoning, left out). StateGone when the provider no longer has it. Pure apart
        from ``fetch``."""
        ...


MAX_LABEL: Final = 128  # a provider's model name, answer id or finish reason, as kept


def label(value: object) -> str:
    """A short provider-given name (model, id, reason) as text; "" when absent or not a string."""
    return value[:MAX_LABEL] if isinstance(value, str) else ""


def text_of(content: object) -> str:
    """Text of a content value: a string, or the ``text`` of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def as_int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def mapping_or_empty(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def stateful(dialect: Dialect) -> StatefulDialect | None:
    """``dialect`` as a ``StatefulDialect`` when its provider keeps state by id, else None."""
    return cast("StatefulDialect", dialect) if hasattr(dialect, "state_endpoints") else None
