"""The sidecar's exception tree and the one table that gives each its status, class and code.

The table is neutral: the dialect a request came in renders it in its own error shape
(holdfast.dialects: OpenAI's ``{"error": {"message", "type", "code", "param"}}``, ...), and
endpoints of no dialect (on-call, OFREP, tools, feedback) use the default one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from holdfast.dialects import ErrorKind
from holdfast.errorshape import lookup


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    status: int
    kind: ErrorKind
    code: str


INTERNAL: Final = ErrorSpec(500, "service", "internal_error")


class SidecarError(Exception):
    """Base of every error the sidecar reports to an agent."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.headers: dict[str, str] = {}


class InvalidRequest(SidecarError):
    """The body is not a usable OpenAI request."""


class BodyTooLarge(SidecarError):
    """The body exceeds the configured limit."""


class UnknownModel(SidecarError):
    """The agent asked for a model name this sidecar does not route."""


class NotConfigured(SidecarError):
    """No configuration has been loaded yet, or the route names a release that is missing."""


class ProviderKeyMissing(SidecarError):
    """The release names an environment variable for its provider key that is not set."""


class UpstreamUnreachable(SidecarError):
    """The provider could not be reached or broke the connection."""


class UpstreamWrongDialect(SidecarError):
    """The provider answered 2xx with a body that is not an answer of the request's API."""


class DialectNotServed(SidecarError):
    """The release that serves the request (its session's pin, or the route's choice) is of a
    provider kind that does not speak the request's API; nothing was forwarded."""


class UpstreamTimeout(SidecarError):
    """The provider did not answer in time."""


class BudgetExhausted(SidecarError):
    """A token budget of the request's scopes cannot cover its worst case (``param``: scope)."""


class BudgetBusy(SidecarError):
    """A budget could cover the request once requests in flight settle, but it did not wait
    (its queue timeout ran out, the queue was full, or waiting is off; ``param``: scope)."""


class PriceUnknown(SidecarError):
    """A cost-limited budget applies but nothing prices the release or its model."""


class ToolSchemaMismatch(SidecarError):
    """A tool the agent declared differs from the contract version its release pins."""


class ToolCallViolation(SidecarError):
    """The model called a tool with arguments that break the pinned contract."""


class ToolNotPinned(SidecarError):
    """POST /tools/{tool}: the session's release pins no contract for that tool."""


class ToolNotProxied(SidecarError):
    """POST /tools/{tool}: the pinned contract has no backend (the agent runs the tool)."""


class ContractUnavailable(SidecarError):
    """The release pins a contract version this sidecar has not received (or refused)."""


class PromptVariables(SidecarError):
    """Prompt variables missing, unknown, or not a JSON object of values."""


class PromptNotInRelease(SidecarError):
    """The agent referred to a prompt that the session's release does not name."""


class PromptUnavailable(SidecarError):
    """The release names a prompt version this sidecar has not received (or refused)."""


class UnknownSession(SidecarError):
    """Feedback for a session that no running experiment assigned."""


class NotFound(SidecarError):
    """No such endpoint."""


class MethodNotAllowed(SidecarError):
    """Endpoint exists, method does not."""


class MisdirectedRequest(SidecarError):
    """The Host header names no host this listener serves (DNS rebinding guard)."""


class Overloaded(SidecarError):
    """More proxied requests in flight than --max-concurrent-requests (Retry-After set)."""


class ShuttingDown(SidecarError):
    """SIGTERM's drain timeout ran out while this request was still in flight (retry it)."""


class UpstreamHostRefused(SidecarError):
    """The provider or tool backend host is not allowed (--allow-upstream-host, SSRF guard)."""


class StateNotFound(SidecarError):
    """A response (or other provider-held state) id that no release of this agent issued, or
    whose record expired."""


class StateNotPortable(SidecarError):
    """An operator moved the session, and the state it continues cannot be carried over."""


class StateReleaseGone(SidecarError):
    """The release that issued a response id no longer exists: nothing can read its state."""


class StateOwnerUnknown(SidecarError):
    """etcd did not answer, and this sidecar has no record of who issued the id (retry)."""


class NoEmbeddingModel(SidecarError):
    """Embeddings were asked of a release that names no embedding model."""


ERROR_TABLE: Final[dict[type[SidecarError], ErrorSpec]] = {
    InvalidRequest: ErrorSpec(400, "invalid_request", "invalid_request"),
    BodyTooLarge: ErrorSpec(413, "invalid_request", "request_too_large"),
    UnknownModel: ErrorSpec(404, "not_found", "model_not_found"),
    NotFound: ErrorSpec(404, "not_found", "unknown_url"),
    ToolSchemaMismatch: ErrorSpec(400, "invalid_request", "tool_schema_mismatch"),
    ToolCallViolation: ErrorSpec(502, "upstream", "tool_call_contract_violation"),
    ToolNotPinned: ErrorSpec(404, "not_found", "tool_not_pinned"),
    ToolNotProxied: ErrorSpec(400, "invalid_request", "tool_not_proxied"),
    ContractUnavailable: ErrorSpec(503, "service", "contract_unavailable"),
    PromptVariables: ErrorSpec(400, "invalid_request", "prompt_variables"),
    PromptNotInRelease: ErrorSpec(400, "invalid_request", "prompt_not_in_release"),
    PromptUnavailable: ErrorSpec(503, "service", "prompt_unavailable"),
    UnknownSession: ErrorSpec(404, "not_found", "unknown_session"),
    MethodNotAllowed: ErrorSpec(405, "invalid_request", "method_not_allowed"),
    MisdirectedRequest: ErrorSpec(421, "invalid_request", "misdirected_request"),
    Overloaded: ErrorSpec(503, "service", "overloaded"),
    ShuttingDown: ErrorSpec(503, "service", "shutting_down"),
    UpstreamHostRefused: ErrorSpec(502, "upstream", "upstream_host_not_allowed"),
    BudgetExhausted: ErrorSpec(429, "quota", "budget_exhausted"),
    BudgetBusy: ErrorSpec(429, "quota", "budget_busy"),
    PriceUnknown: ErrorSpec(503, "service", "price_unknown"),
    NotConfigured: ErrorSpec(503, "service", "not_configured"),
    ProviderKeyMissing: ErrorSpec(503, "service", "provider_key_missing"),
    UpstreamUnreachable: ErrorSpec(502, "upstream", "upstream_unreachable"),
    UpstreamTimeout: ErrorSpec(504, "upstream", "upstream_timeout"),
    StateNotFound: ErrorSpec(404, "not_found", "response_not_found"),
    StateNotPortable: ErrorSpec(409, "invalid_request", "state_not_portable"),
    StateReleaseGone: ErrorSpec(409, "invalid_request", "state_release_gone"),
    StateOwnerUnknown: ErrorSpec(503, "service", "state_owner_unknown"),
    NoEmbeddingModel: ErrorSpec(400, "invalid_request", "embedding_model_missing"),
    UpstreamWrongDialect: ErrorSpec(502, "upstream", "upstream_wrong_dialect"),
    # 400, not 409: SDKs retry a 409, and no retry can change which provider serves a release.
    DialectNotServed: ErrorSpec(400, "invalid_request", "dialect_not_served"),
}


def spec_for(exc: SidecarError) -> ErrorSpec:
    return lookup(ERROR_TABLE, exc, INTERNAL)
