"""Session pinning on the request path: resolve, then record what etcd must learn.

``lookup`` never awaits: a pinned session, a request without a session and (when no claims are
configured) a new session decided locally are all settled between two dict reads and the local
record, and any write etcd must see is queued for the pin writer. A session this sidecar has no
pin for is settled by ``first_turn`` with one bounded exchange with etcd (``sidecar.pin_claim``),
so that a session another sidecar pinned a moment ago keeps that sidecar's release. Concurrent
first turns of one session in this sidecar share one such exchange: they cannot pick two
releases.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping

from holdfast.keyspace import Pin, Release
from holdfast.logs import get_logger
from sidecar.config import ConfigSnapshot
from sidecar.pins.claim import PinClaims
from sidecar.pins.metrics import PinMetrics
from sidecar.pins.table import PinTable, refresh_interval
from sidecar.routing import Resolved, pinned_prompts, resolve, unrecorded_prompts

log = get_logger(__name__)


def _settled(task: asyncio.Task[Resolved]) -> None:
    """Whoever waited for a settling task may have gone (the agent hung up): its outcome is
    still taken, so that an error is logged here rather than lost."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("pin_settle_failed", error=repr(exc)[:200])


class Pinning:
    def __init__(
        self,
        agent: str,
        table: PinTable,
        metrics: PinMetrics,
        *,
        ttl: float,
        clock: Callable[[], float] = time.time,
        claims: PinClaims | None = None,
    ) -> None:
        self.agent = agent
        self.table = table
        self.metrics = metrics
        self.refresh_s = refresh_interval(ttl)
        self.claims = claims
        self._clock = clock
        self._first_turns: dict[str, asyncio.Future[None]] = {}

    def resolve(
        self,
        snapshot: ConfigSnapshot | None,
        model: str,
        session: str | None,
        attributes: Mapping[str, str] | None = None,
        speaks: str | None = None,
    ) -> Resolved:
        """Without etcd: a new session is decided and recorded here (the pin writer creates it
        later). ``attributes`` (tenant, category) feed the route's flag for a new session;
        ``speaks`` is the provider kind the request's dialect needs (routing.resolve)."""
        return self._local(
            resolve(snapshot, self.agent, model, session, self.table, attributes, speaks),
            snapshot,
        )

    def lookup(
        self,
        snapshot: ConfigSnapshot | None,
        model: str,
        session: str | None,
        attributes: Mapping[str, str] | None = None,
        speaks: str | None = None,
    ) -> Resolved | None:
        """The request path's call, with no await; None for a session this sidecar has no pin
        for while claims are on: then ``await first_turn(...)`` with the same arguments."""
        resolved = resolve(snapshot, self.agent, model, session, self.table, attributes, speaks)
        if resolved.kind == "new" and self.claims is not None:
            return None
        return self._local(resolved, snapshot)

    async def first_turn(
        self,
        snapshot: ConfigSnapshot | None,
        model: str,
        session: str | None,
        attributes: Mapping[str, str] | None = None,
        speaks: str | None = None,
    ) -> Resolved:
        """Settle a session this sidecar has no pin for with etcd, then serve it."""
        while session is not None and (running := self._first_turns.get(session)) is not None:
            await asyncio.shield(running)  # one claim per session; the others reuse its pin
            found = self.lookup(snapshot, model, session, attributes, speaks)
            if found is not None:
                return found
        resolved = resolve(snapshot, self.agent, model, session, self.table, attributes, speaks)
        if resolved.kind != "new" or self.claims is None or snapshot is None or session is None:
            return self._local(resolved, snapshot)
        running = self._first_turns[session] = asyncio.get_running_loop().create_future()
        try:
            return await self._claim(snapshot, model, session, attributes, resolved, speaks)
        finally:
            del self._first_turns[session]
            running.set_result(None)

    def speculate(
        self,
        snapshot: ConfigSnapshot | None,
        model: str,
        session: str | None,
        attributes: Mapping[str, str] | None = None,
        speaks: str | None = None,
    ) -> tuple[Resolved, asyncio.Task[Resolved]] | None:
        """A first turn served at once on this sidecar's own decision while etcd settles it:
        (the decision, the task that settles it). The caller sends the request on and awaits
        the task before the agent sees a byte; when etcd holds another sidecar's pin with
        another release, the answer is dropped and the request served again there. None when
        there is nothing to settle (call ``first_turn``)."""
        if session is None or self.claims is None or snapshot is None:
            return None
        if session in self._first_turns:
            return None  # another request of this session is settling it: wait for that one
        decided = resolve(snapshot, self.agent, model, session, self.table, attributes, speaks)
        if decided.kind != "new":
            return None
        settling = asyncio.get_running_loop().create_task(
            self.first_turn(snapshot, model, session, attributes, speaks)
        )
        settling.add_done_callback(_settled)
        return decided, settling

    def continue_at(
        self,
        snapshot: ConfigSnapshot | None,
        model: str,
        session: str,
        release: Release,
        attributes: Mapping[str, str] | None = None,
    ) -> Resolved:
        """A request that continues provider-held state issued by ``release``: served there,
        whatever the route says. A session without a pin (a chain's second turn, or a pin that
        expired) is pinned to it; one pinned elsewhere (a budget's degrade issued the state)
        keeps its pin and is served where its state is."""
        resolved = resolve(snapshot, self.agent, model, session, self.table, attributes)
        if resolved.kind == "pinned":
            if resolved.release.name == release.name:
                return self._local(resolved, snapshot)
            self.metrics.routed(release.name, "pinned")
            return dataclasses.replace(resolved, release=release, migrated_from=None)
        return self._local(Resolved(release, resolved.revision, session, "new"), snapshot)

    def _local(self, resolved: Resolved, snapshot: ConfigSnapshot | None) -> Resolved:
        session = resolved.session
        if resolved.kind == "new" and session is not None and snapshot is not None:
            self.table.record_new(self._new_pin(session, resolved, snapshot))
        else:
            self._used(resolved, snapshot)
        self.metrics.routed(resolved.release.name, resolved.kind)
        return resolved

    async def _claim(
        self,
        snapshot: ConfigSnapshot,
        model: str,
        session: str,
        attributes: Mapping[str, str] | None,
        resolved: Resolved,
        speaks: str | None = None,
    ) -> Resolved:
        assert self.claims is not None
        pin = self._new_pin(session, resolved, snapshot)
        claim = await self.claims.claim(pin)
        if claim is None:  # etcd did not answer in time: as before claims, decide here
            found = self.lookup(snapshot, model, session, attributes, speaks)
            if found is not None:
                return found  # unless the watch brought the session's pin meanwhile
            self.table.record_new(pin)
        elif claim.stored is not None:
            if self.table.adopt(claim.stored, newer_only=True):
                found = self.lookup(snapshot, model, session, attributes, speaks)
                if found is not None:
                    log.info(
                        "pin_claim_adopted",
                        session=session,
                        release=found.release.name,
                        route_release=resolved.release.name,
                    )
                    return found
            self.table.record_new(pin)  # unreadable: serve as decided, the writer sorts it out
        else:
            self.table.record_claimed(pin, claim.revision, claim.lease)
        self.metrics.routed(resolved.release.name, resolved.kind)
        return resolved

    def _new_pin(self, session: str, resolved: Resolved, snapshot: ConfigSnapshot) -> Pin:
        now = self._clock()
        return Pin(
            agent=self.agent,
            session=session,
            release=resolved.release.name,
            pinned_at=now,
            revision=snapshot.revision,
            touched_at=now,
            prompts=pinned_prompts(snapshot, resolved.release),
            experiment=resolved.experiment,
        )

    def _used(self, resolved: Resolved, snapshot: ConfigSnapshot | None) -> None:
        """A pinned session served again: notice, prompt versions, lease refresh."""
        session = resolved.session
        if session is None or resolved.kind != "pinned":
            return
        if resolved.migrated_from is not None:
            self.table.mark_told(session)
            log.info(
                "pin_migration_announced",
                session=session,
                release=resolved.release.name,
                migrated_from=resolved.migrated_from,
            )
        entry = self.table.get(session)
        if entry is None:
            return
        if resolved.release.prompts and snapshot is not None:
            # first use of a prompt the pin does not name yet (no version was active at the
            # session's first turn, or a migration moved it to a release that follows more)
            first = unrecorded_prompts(snapshot, resolved.release, entry.pin.prompts)
            if first:
                self.table.record_prompts(session, first)
                return
        if not entry.pending and self._clock() - entry.pin.touched_at >= self.refresh_s:
            self.table.mark_pending(session)  # the writer re-attaches it to the newest lease
