"""A session's first turn on this sidecar, settled with etcd before the release is chosen.

The pin table knows only what the watch has delivered so far, so a session that another sidecar
pinned a moment ago looks new here. On such a miss the sidecar asks etcd first, in one bounded
exchange: create the pin if its key does not exist (compare-and-swap on "no key", under the pin
writer's current lease), else read the pin that is there and serve that release.

If etcd does not settle it within ``timeout``, the caller decides locally and the pin writer
creates the pin later, adopting etcd's pin should another sidecar have won meanwhile: that
window, and only it, can serve one session from two releases. After such a failure first turns
decide locally for ``retry_after`` seconds before etcd is asked again, so an outage costs one
timeout per interval rather than one per new session.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Final

from holdfast.keyspace import Keyspace, Pin
from holdfast.logs import get_logger
from holdfast.store import KeyValue, Put, Store
from holdfast.store.errors import CasConflict, LeaseNotFound, StoreError
from sidecar.pins.metrics import PinMetrics
from sidecar.pins.writer import PinWriter

log = get_logger(__name__)

RETRY_AFTER_S: Final = 1.0
ATTEMPTS: Final = 3  # a pin that expires between the create and the read, or a lost lease


@dataclass(frozen=True, slots=True)
class Claim:
    """etcd's answer: this sidecar's pin was created (at ``revision`` under ``lease``), or
    ``stored`` is the pin another sidecar wrote first."""

    stored: KeyValue | None = None
    revision: int = 0
    lease: int = 0

    @property
    def created(self) -> bool:
        return self.stored is None


class PinClaims:
    def __init__(
        self,
        store: Store,
        keyspace: Keyspace,
        writer: PinWriter,
        metrics: PinMetrics,
        *,
        timeout: float,
        retry_after: float = RETRY_AFTER_S,
    ) -> None:
        self._store = store
        self._keyspace = keyspace
        self._writer = writer
        self._metrics = metrics
        self.timeout = timeout
        self._retry_after = retry_after
        self._local_until = 0.0  # monotonic: first turns decide locally until then
        self._degraded = False
        self.created = 0
        self.adopted = 0
        self.fallbacks = 0

    async def claim(self, pin: Pin) -> Claim | None:
        """Create ``pin`` in etcd or read the one there; None: etcd did not settle it in time
        (or is known to be down), so the caller decides locally."""
        if time.monotonic() < self._local_until:
            self._fallback(None)
            return None
        try:
            async with asyncio.timeout(self.timeout):
                claim = await self._claim(pin)
        except (TimeoutError, StoreError) as exc:
            self._local_until = time.monotonic() + self._retry_after
            self._fallback(exc)
            return None
        if self._degraded:
            self._degraded = False
            log.info("pin_claims_restored")
        if claim.created:
            self.created += 1
            self._metrics.claims_created.inc()
        else:
            self.adopted += 1
            self._metrics.claims_adopted.inc()
        return claim

    async def _claim(self, pin: Pin) -> Claim:
        key = self._keyspace.pin(pin.agent, pin.session)
        value = pin.encode()
        for _ in range(ATTEMPTS):
            lease = await self._writer.current_lease()
            try:
                result = await self._store.txn([Put(key, value, 0, lease)])  # 0: must not exist
            except CasConflict:
                stored = await self._store.get(key)
                if stored is None:
                    continue  # it expired between the two calls: create it after all
                return Claim(stored=stored)
            except LeaseNotFound:
                self._writer.lease_lost(lease)
                continue
            return Claim(revision=result.revision, lease=lease)
        raise StoreError(f"pin {key} kept changing under {ATTEMPTS} create attempts")

    def _fallback(self, exc: BaseException | None) -> None:
        self.fallbacks += 1
        self._metrics.claims_fallback.inc()
        if exc is not None and not self._degraded:
            self._degraded = True
            reason = str(exc) or f"no answer within {self.timeout:g}s"
            log.warning("pin_claims_degraded", reason=reason, local_for_s=self._retry_after)

    def status(self) -> dict[str, Any]:
        return {
            "create_timeout_s": self.timeout,
            "claims_created": self.created,
            "claims_adopted": self.adopted,
            "claims_fallback": self.fallbacks,
        }
