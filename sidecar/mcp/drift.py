"""The drift this sidecar has seen of its MCP backends from pinned contract versions, pure.

A drift is noted once per backend, tool, version and live entry (a backend that keeps listing
the same changed tool is one drift, not one per ``tools/list``); the most recent ones are what
``/status`` lists and what the health snapshot carries to configsvc, which records each one
once in the audit trail (``mcp.drift``; holdfast.keyspace.drift).
"""

from __future__ import annotations

from typing import Any, Final

from holdfast.keyspace.drift import MAX_DRIFT_REPORTED, McpDrift, drift_id, live_hash

MAX_DRIFT_KEPT: Final = 4096


class DriftLog:
    def __init__(self, *, recent: int = MAX_DRIFT_REPORTED, max_kept: int = MAX_DRIFT_KEPT) -> None:
        self._seen: set[str] = set()
        self._recent: list[McpDrift] = []
        self.recent_size = recent
        self.max_kept = max_kept
        self.noted = 0

    def known(self, *, backend: str, tool: str, version: str, live: Any) -> bool:
        """Whether this drift (the backend listing ``live`` for a pinned version) was noted."""
        return drift_id(backend, tool, version, live_hash(live)) in self._seen

    def note(
        self,
        *,
        toolset: str,
        backend: str,
        tool: str,
        version: str,
        release: str,
        live: Any,
        detail: str,
        now: float,
    ) -> McpDrift | None:
        """The drift as a new record; None when this one was noted before."""
        drift = McpDrift(
            backend=backend, tool=tool, version=version, live=live_hash(live), detail=detail,
            toolset=toolset, release=release, at=now,
        )  # fmt: skip
        if drift.ident in self._seen:
            return None
        if len(self._seen) >= self.max_kept:
            # Forgetting only means a drift may be noted (and counted) once more; configsvc
            # records it once whatever the sidecars send.
            self._seen.clear()
        self._seen.add(drift.ident)
        self._recent = [*self._recent[-(self.recent_size - 1) :], drift]
        self.noted += 1
        return drift

    def records(self) -> tuple[McpDrift, ...]:
        """The most recent drifts, oldest first (the health snapshot's ``mcp_drift``)."""
        return tuple(self._recent)

    def status(self) -> list[dict[str, Any]]:
        return [
            {
                "at": d.at,
                "toolset": d.toolset,
                "backend": d.backend,
                "contract": d.contract,
                "release": d.release,
                "detail": d.detail,
                "id": d.ident,
            }
            for d in self._recent
        ]
