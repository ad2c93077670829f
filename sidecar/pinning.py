"""Session pinning on the request path: resolve, then record what etcd must learn.

Synchronous on purpose: between the pin-table lookup and the local record there is no await,
so two concurrent first requests of one session cannot pick two releases in this sidecar, and
the request never waits on etcd (the pin writer takes the queued writes there).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Final

from holdfast.keyspace import Pin
from holdfast.logs import get_logger
from sidecar.config import ConfigSnapshot
from sidecar.pin_metrics import PinMetrics
from sidecar.pins import PinTable
from sidecar.prompt_index import pinned_prompts
from sidecar.routing import Resolved, resolve

log = get_logger(__name__)

MIN_REFRESH_INTERVAL_S: Final = 1.0
REFRESHES_PER_TTL: Final = 24


def refresh_interval(ttl: float) -> float:
    """How often a used pin is re-attached to a fresh lease (and a fresh lease granted)."""
    return max(ttl / REFRESHES_PER_TTL, MIN_REFRESH_INTERVAL_S)


class Pinning:
    def __init__(
        self,
        agent: str,
        table: PinTable,
        metrics: PinMetrics,
        *,
        ttl: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.agent = agent
        self.table = table
        self.metrics = metrics
        self.refresh_s = refresh_interval(ttl)
        self._clock = clock

    def resolve(
        self,
        snapshot: ConfigSnapshot | None,
        model: str,
        session: str | None,
        attributes: Mapping[str, str] | None = None,
    ) -> Resolved:
        """``attributes`` (tenant, category) feed the route's flag for a new session."""
        resolved = resolve(snapshot, self.agent, model, session, self.table, attributes)
        if resolved.session is not None and snapshot is not None:
            self._record(resolved.session, resolved, snapshot)
        self.metrics.routed(resolved.release.name, resolved.kind)
        return resolved

    def _record(self, session: str, resolved: Resolved, snapshot: ConfigSnapshot) -> None:
        now = self._clock()
        revision = snapshot.revision
        if resolved.kind == "new":
            pin = Pin(
                agent=self.agent,
                session=session,
                release=resolved.release.name,
                pinned_at=now,
                revision=revision,
                touched_at=now,
                prompts=pinned_prompts(snapshot, resolved.release),
                experiment=resolved.experiment,
            )
            self.table.record_new(pin)
            return
        if resolved.migrated_from is not None:
            self.table.mark_told(session)
            log.info(
                "pin_migration_announced",
                session=session,
                release=resolved.release.name,
                migrated_from=resolved.migrated_from,
            )
            return
        entry = self.table.get(session)
        if entry is not None and not entry.pending and now - entry.pin.touched_at >= self.refresh_s:
            self.table.mark_pending(session)  # the writer re-attaches it to the newest lease
