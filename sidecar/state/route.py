"""Where a request of a dialect with provider-held state goes, before the route is asked.

* It continues state (``previous_response_id``, ``conversation``): the release that issued the
  id serves it, whatever the route says now -- the session's pin, extended to state ids. The
  session is the ``X-Holdfast-Session`` header, else the one the id was issued in.
* An operator migrated that session to another release since: the conversation is read back
  from the issuing release (with its key) and the request is sent to the new release whole,
  without the id (sidecar.state.rebuild). Never is an id sent to a release that did not
  issue it: what cannot be rebuilt is a 409.
* An id no release of this agent issued: 404; its release was deleted: 409.
* It starts a chain without any session (no header, no body hint) and the provider will store
  the answer: the route chooses by a fresh sticky hash, nothing is pinned yet, and the chain's
  session is named after its first response id (sidecar.state.recorder) once it continues.
* A conversation id the agent's sidecars have not seen yet (they never see one created) is a
  session of its own: the route places it, and the first answer records it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import cast

from holdfast.dialects import Dialect, RequestView, StatefulDialect, StatefulRequest, StateRef
from holdfast.dialects import stateful as stateful_of
from holdfast.keyspace import StateOwner
from sidecar.config import ConfigState
from sidecar.errors import StateNotFound, StateNotPortable, StateReleaseGone
from sidecar.pins import Pinning, StateLookup, StateTable
from sidecar.routing import Resolved, resolve, session_id
from sidecar.state import rebuild
from sidecar.upstream import Upstream

CHAIN_KEY_PREFIX = "chain-"


class StateRouting:
    def __init__(
        self,
        agent: str,
        config: ConfigState,
        pinning: Pinning,
        table: StateTable,
        lookup: StateLookup,
        upstream: Upstream,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.agent = agent
        self.config = config
        self.pinning = pinning
        self.table = table
        self.lookup = lookup
        self.upstream = upstream
        self._clock = clock
        self.rebuilt = 0

    async def route(
        self,
        headers: Mapping[str, str],
        dialect: Dialect,
        view: RequestView,
        attributes: Mapping[str, str],
        request_id: str,
    ) -> Resolved | str | None:
        """The request's resolution, or the session it belongs to (the route then places it),
        or None: nothing stateful about it, route it as any other."""
        stateful = stateful_of(dialect)
        if stateful is None:
            return None
        request = cast(StatefulRequest, view)
        ref = request.state_ref()
        if ref is not None:
            return await self._continue(stateful, request, ref, headers, attributes, request_id)
        if session_id(headers, request.session_hint) is not None or not request.stores:
            return None
        return self._open_chain(request, attributes)

    def _open_chain(self, request: StatefulRequest, attributes: Mapping[str, str]) -> Resolved:
        key = CHAIN_KEY_PREFIX + secrets.token_hex(12)
        resolved = resolve(self.config.current, self.agent, request.model, key, None, attributes)
        self.pinning.metrics.routed(resolved.release.name, "new")
        return replace(resolved, session=None, kind="unpinned")

    async def _continue(
        self,
        dialect: StatefulDialect,
        request: StatefulRequest,
        ref: StateRef,
        headers: Mapping[str, str],
        attributes: Mapping[str, str],
        request_id: str,
    ) -> Resolved | str:
        owner = await self.lookup.owner(ref.id)
        header = session_id(headers, None)
        session = header or (owner.session if owner is not None else None)
        entry = self.pinning.table.get(session) if session is not None else None
        moved = entry is not None and bool(entry.pin.migrated_from)
        if owner is None:
            if ref.kind == "conversation":
                if moved:
                    raise self._not_portable(ref, "its conversation lives at the old release")
                return header or ref.id
            if moved:
                raise self._not_portable(
                    ref,
                    f"{ref.id!r:.140} is unknown to this agent (created with store: false, or "
                    "its record expired)",
                )
            raise StateNotFound(
                f"{ref.param} {ref.id!r:.140} was not issued by any release of agent "
                f"{self.agent!r} through its sidecars, or its record expired (--pin-ttl after "
                "its last use); responses created with store: false are never recorded",
                param=ref.param,
            )
        assert session is not None
        snapshot = self.config.current
        issuer = snapshot.releases.get(owner.release) if snapshot is not None else None
        if entry is not None and moved and entry.pin.release != owner.release:
            return await self._rebuild(dialect, request, ref, owner, entry.pin.release, session,
                                       attributes, request_id)  # fmt: skip
        if issuer is None:
            raise StateReleaseGone(
                f"{ref.param} {ref.id!r:.140} was issued by release {owner.release!r} of agent "
                f"{self.agent!r}, which no longer exists: only it held that state; start a new "
                "conversation (send it whole, without the id)",
                param=ref.param,
            )
        self.table.touch(ref.id, self._clock(), self.pinning.refresh_s)
        return self.pinning.continue_at(snapshot, request.model, session, issuer, attributes)

    async def _rebuild(
        self,
        dialect: StatefulDialect,
        request: StatefulRequest,
        ref: StateRef,
        owner: StateOwner,
        target: str,
        session: str,
        attributes: Mapping[str, str],
        request_id: str,
    ) -> Resolved:
        snapshot = self.config.current
        issuer = snapshot.releases.get(owner.release) if snapshot is not None else None
        if ref.kind == "conversation":
            raise self._not_portable(ref, "a conversation lives at its release and is not copied")
        if issuer is None:
            raise self._not_portable(ref, f"release {owner.release!r} that held it was deleted")
        if not owner.stored:
            raise self._not_portable(ref, "it was created with store: false")
        history = await rebuild.history(
            self.upstream, issuer, dialect, ref.id, request_id=request_id, moved_to=target
        )
        request.self_contained(history)
        self.rebuilt += 1
        resolved = self.pinning.lookup(snapshot, request.model, session, attributes)
        assert resolved is not None  # the session is pinned: no first turn to settle
        return resolved

    def _not_portable(self, ref: StateRef, why: str) -> StateNotPortable:
        return StateNotPortable(
            f"an operator moved this session to another release, and {ref.param} "
            f"{ref.id!r:.140} cannot be carried there: {why}; start a new conversation (send it "
            "whole, without the id)",
            param=ref.param,
        )
