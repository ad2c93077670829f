"""configsvc's exception tree and the one table that turns each into an HTTP error.

Every error leaves the API as ``{"error": {"message", "type", "code", "param"}}`` with the status
from ``ERROR_TABLE``; store errors are translated into these at the service boundary.
"""

from __future__ import annotations

from typing import Final

from holdfast.errorshape import INTERNAL, ErrorSpec, lookup


class ConfigsvcError(Exception):
    """Base of every error configsvc reports to an operator."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(ConfigsvcError):
    """The request cannot be used as sent: bad JSON, unknown fields, invalid names or values."""


class BodyTooLarge(ConfigsvcError):
    """The body exceeds the API's size limit."""


class Unauthorized(ConfigsvcError):
    """No token, or the wrong one, where one is required."""


class Forbidden(ConfigsvcError):
    """A valid token whose role is too low for this endpoint."""


class NotFound(ConfigsvcError):
    """Base of the "no such thing" errors."""


class AgentNotFound(NotFound):
    """The agent has no releases (or no route, where a route is needed)."""


class ReleaseNotFound(NotFound):
    """The release does not exist."""


class ContractNotFound(NotFound):
    """No such tool contract (or no such version of it)."""


class FlagNotFound(NotFound):
    """No flag with that key."""


class InvalidFlagFile(InvalidRequest):
    """A flag file (or flag) that fails validation; nothing of it was written."""


class UnknownEndpoint(NotFound):
    """No such URL."""


class MethodNotAllowed(ConfigsvcError):
    """The URL exists; the method does not."""


class Conflict(ConfigsvcError):
    """Base of the errors about the state the request met."""


class ReleaseExists(Conflict):
    """Releases are immutable: a name is created once."""


class RevisionConflict(Conflict):
    """The record changed since the revision the caller read (or kept changing under retries)."""


class NoPreviousRelease(Conflict):
    """Rollback asked for, but the route has no previous stable release."""


class RolloutActive(Conflict):
    """A progressive rollout is running or paused; it owns the canary until it ends."""


class NoActiveRollout(Conflict):
    """A rollout command needs a running (or paused) rollout and there is none."""


class ProviderMismatch(Conflict):
    """The change would put releases of two provider kinds where one agent's requests go."""


class ProbeFailed(Conflict):
    """The warm-up probe through the target release's provider failed; nothing was switched."""


class BudgetNotFound(NotFound):
    """No budget for that scope."""


class PinNotFound(NotFound):
    """No pin for that session (never seen, or expired)."""


class PromptNotFound(NotFound):
    """No such prompt (or no such version of it)."""


class ExperimentNotFound(NotFound):
    """No experiment of that name."""


class InvalidCases(InvalidRequest):
    """An evaluation case file that does not parse or validate; nothing was run."""


class PromptGateFailed(Conflict):
    """The version's evaluation is missing or below the gate; activation needs --force."""


class NoPreviousPrompt(Conflict):
    """Rollback asked for, but the prompt has no active version or nothing to go back to."""


class McpImportFailed(ConfigsvcError):
    """contract import-mcp: the MCP server could not be reached or listed; nothing registered."""


class EvalFailed(ConfigsvcError):
    """The model failed every case of an evaluation; nothing was recorded."""


class ExperimentConflict(Conflict):
    """The agent's route cannot take (or lose) the experiment in its current state."""


class UpstreamRefused(InvalidRequest):
    """A base_url or backend at a host the upstream allowlist refuses (SSRF guard)."""


class InvalidHealthBeat(InvalidRequest):
    """A health beat that is not a sidecar's health snapshot (msgpack record) or that speaks
    for another agent than its token's; nothing of it was taken."""


class MisdirectedRequest(ConfigsvcError):
    """The Host header names no host this listener serves (DNS rebinding guard)."""


class StoreDown(ConfigsvcError):
    """etcd did not answer a read; nothing was changed."""


class WriteOutcomeUnknown(StoreDown):
    """etcd did not answer a write: it may or may not have been applied."""


class StoredRecordInvalid(ConfigsvcError):
    """A record in etcd cannot be decoded (written by something else, or damaged)."""


ERROR_TABLE: Final[dict[type[ConfigsvcError], ErrorSpec]] = {
    InvalidRequest: ErrorSpec(400, "invalid_request_error", "invalid_request"),
    BodyTooLarge: ErrorSpec(413, "invalid_request_error", "request_too_large"),
    Unauthorized: ErrorSpec(401, "authentication_error", "invalid_token"),
    Forbidden: ErrorSpec(403, "permission_error", "forbidden"),
    NotFound: ErrorSpec(404, "invalid_request_error", "not_found"),
    AgentNotFound: ErrorSpec(404, "invalid_request_error", "agent_not_found"),
    ReleaseNotFound: ErrorSpec(404, "invalid_request_error", "release_not_found"),
    ContractNotFound: ErrorSpec(404, "invalid_request_error", "contract_not_found"),
    FlagNotFound: ErrorSpec(404, "invalid_request_error", "flag_not_found"),
    InvalidFlagFile: ErrorSpec(400, "invalid_request_error", "invalid_flag_file"),
    UnknownEndpoint: ErrorSpec(404, "invalid_request_error", "unknown_url"),
    MethodNotAllowed: ErrorSpec(405, "invalid_request_error", "method_not_allowed"),
    Conflict: ErrorSpec(409, "conflict_error", "conflict"),
    ReleaseExists: ErrorSpec(409, "conflict_error", "release_exists"),
    RevisionConflict: ErrorSpec(409, "conflict_error", "revision_conflict"),
    NoPreviousRelease: ErrorSpec(409, "conflict_error", "no_previous_release"),
    RolloutActive: ErrorSpec(409, "conflict_error", "rollout_active"),
    NoActiveRollout: ErrorSpec(409, "conflict_error", "no_active_rollout"),
    ProbeFailed: ErrorSpec(409, "conflict_error", "probe_failed"),
    ProviderMismatch: ErrorSpec(409, "conflict_error", "provider_mismatch"),
    PinNotFound: ErrorSpec(404, "invalid_request_error", "pin_not_found"),
    BudgetNotFound: ErrorSpec(404, "invalid_request_error", "budget_not_found"),
    PromptNotFound: ErrorSpec(404, "invalid_request_error", "prompt_not_found"),
    ExperimentNotFound: ErrorSpec(404, "invalid_request_error", "experiment_not_found"),
    InvalidCases: ErrorSpec(400, "invalid_request_error", "invalid_cases"),
    PromptGateFailed: ErrorSpec(409, "conflict_error", "prompt_gate_failed"),
    NoPreviousPrompt: ErrorSpec(409, "conflict_error", "no_previous_prompt"),
    EvalFailed: ErrorSpec(502, "upstream_error", "eval_failed"),
    McpImportFailed: ErrorSpec(502, "upstream_error", "mcp_import_failed"),
    ExperimentConflict: ErrorSpec(409, "conflict_error", "experiment_conflict"),
    UpstreamRefused: ErrorSpec(400, "invalid_request_error", "upstream_host_refused"),
    MisdirectedRequest: ErrorSpec(421, "invalid_request_error", "misdirected_request"),
    InvalidHealthBeat: ErrorSpec(400, "invalid_request_error", "invalid_health_beat"),
    StoreDown: ErrorSpec(503, "holdfast_error", "store_unavailable"),
    WriteOutcomeUnknown: ErrorSpec(503, "holdfast_error", "write_outcome_unknown"),
    StoredRecordInvalid: ErrorSpec(500, "holdfast_error", "invalid_stored_record"),
}


def spec_for(exc: ConfigsvcError) -> ErrorSpec:
    """The most specific entry of the table for ``exc`` (its class, else its nearest base)."""
    return lookup(ERROR_TABLE, exc, INTERNAL)
