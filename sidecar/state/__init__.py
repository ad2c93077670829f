"""Provider-held conversation state (OpenAI Responses): continuations routed to the release that
issued their id, sessions an operator moved rebuilt at their new release, the ids each answer
issues recorded, and the endpoints that read or change stored state by id."""

from __future__ import annotations

from sidecar.state.endpoints import StateEndpoints
from sidecar.state.recorder import StateFilter
from sidecar.state.route import StateRouting

__all__ = ["StateEndpoints", "StateFilter", "StateRouting"]
