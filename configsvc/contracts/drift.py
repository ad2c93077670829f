"""MCP drift in the audit trail: each drift the sidecars report, recorded once.

A sidecar's health snapshot carries the drifts of its MCP backends from pinned contract
versions (holdfast.keyspace.drift). configsvc, which alone writes the audit trail, turns each
distinct one into ``drift/<id>`` plus an ``mcp.drift`` audit entry, in one transaction whose put
requires the key to be absent: however many sidecars report the drift, however many replicas
see their snapshots, and across restarts, it is recorded once. Recording happens off the
snapshot path, in one background task; with etcd away the drifts wait (bounded) and are
recorded when it is back.
"""

from __future__ import annotations

import asyncio
from typing import Final

from configsvc.errors import ConfigsvcError
from configsvc.releases import ConfigService
from holdfast.background import BackgroundTask
from holdfast.keyspace import HealthSnapshot
from holdfast.keyspace.drift import McpDrift
from holdfast.logs import get_logger
from holdfast.store import CasConflict, Put, StoreError

log = get_logger(__name__)

ACTION: Final = "mcp.drift"
MAX_PENDING: Final = 256
MAX_KNOWN: Final = 8192
RETRY_S: Final = 2.0


class DriftAudit:
    def __init__(self, service: ConfigService, *, retry_s: float = RETRY_S) -> None:
        self.service = service
        self.retry_s = retry_s
        self._known: set[str] = set()  # ids recorded in etcd (by anyone)
        self._pending: dict[str, McpDrift] = {}
        self._wake = asyncio.Event()
        self._task = BackgroundTask("mcp drift audit")
        self.recorded = 0
        self.dropped = 0

    def observe(self, snapshot: HealthSnapshot) -> None:
        """A sidecar's snapshot arrived: queue the drifts it reports that are not known yet."""
        for drift in snapshot.mcp_drift:
            ident = drift.ident
            if ident in self._known or ident in self._pending:
                continue
            if len(self._pending) >= MAX_PENDING:
                self.dropped += 1  # still in the sidecar's next snapshots: seen again later
                continue
            self._pending[ident] = McpDrift.from_map(
                drift.to_map() | {"agent": snapshot.agent, "sidecar_id": snapshot.sidecar_id}
            )
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task.start(self._run)

    async def close(self) -> None:
        await self._task.cancel()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                done = await self.flush()
            except Exception:  # a bug must not end the audit for the life of the process
                log.exception("mcp_drift_audit_crashed")
                done = False
            if not done:
                await asyncio.sleep(self.retry_s)
                self._wake.set()

    async def flush(self) -> bool:
        """Record every pending drift; False when etcd failed (the rest stay pending)."""
        for ident, drift in list(self._pending.items()):
            try:
                await self.record(drift)
            except (StoreError, ConfigsvcError) as exc:
                log.warning("mcp_drift_audit_deferred", id=ident, error=str(exc))
                return False
            self._pending.pop(ident, None)
            if len(self._known) >= MAX_KNOWN:
                self._known.clear()  # a forgotten id costs one read when it is reported again
            self._known.add(ident)
        return True

    async def record(self, drift: McpDrift) -> bool:
        """Write ``drift/<id>`` and its audit entry; False when it was recorded already."""
        service = self.service
        key = service.keyspace.drift(drift.ident)
        if await service.store.get(key) is not None:
            return False
        where = {"tool": drift.tool, "version": drift.version, "backend": drift.backend,
                 "toolset": drift.toolset}  # fmt: skip
        entry = service.audit_entry(
            f"sidecar:{drift.sidecar_id}" if drift.sidecar_id else "sidecar",
            ACTION,
            key,
            f"{drift.contract} on {drift.backend}: {drift.detail}",
            None,
            drift.to_map(),
            drift.agent,
            extra=where,
        )
        try:
            await service._write(Put(key, drift.encode(), expected_mod_revision=0), entry)
        except CasConflict:
            return False  # another replica recorded it first
        self.recorded += 1
        log.warning(
            "mcp_drift_recorded", contract=drift.contract, backend=drift.backend,
            detail=drift.detail, agent=drift.agent, sidecar=drift.sidecar_id,
        )  # fmt: skip
        return True
