"""Who issued a state id, on the request path: the table first (a dict hit), else etcd.

The table holds every record of the agent that the watch delivered, so a continuation served by
any sidecar of the agent is usually settled without an await. A miss asks etcd once (bounded
by ``timeout``); when etcd has nothing either, the issuing sidecar's write may still be in
flight (it goes out as the answer does), so the lookup waits up to ``wait`` for the watch to
bring the record before it says "unknown". When etcd does not answer at all, the lookup fails
rather than guess: a continuation is never sent to a release that did not issue its id.
Without a store (the HTTP surface served alone, in tests) the table is all there is.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from holdfast.keyspace import Keyspace, StateOwner
from holdfast.keyspace.keys import ID_RE
from holdfast.store import Store
from holdfast.store.errors import StoreError
from sidecar.errors import StateOwnerUnknown
from sidecar.pins.states import StateTable

WAIT_S: Final = 0.25
RETRY_AFTER_S: Final = 1


class StateLookup:
    def __init__(
        self,
        store: Store | None,
        table: StateTable,
        keyspace: Keyspace,
        agent: str,
        *,
        timeout: float,
        wait: float = WAIT_S,
    ) -> None:
        self._store = store
        self._table = table
        self._keyspace = keyspace
        self._agent = agent
        self.timeout = timeout
        self.wait = wait
        self._waiting: dict[str, asyncio.Event] = {}
        self.misses = 0
        table.on_adopted(self._arrived)

    def _arrived(self, state_id: str) -> None:
        event = self._waiting.get(state_id)
        if event is not None:
            event.set()

    async def owner(self, state_id: str) -> StateOwner | None:
        """The record of ``state_id``; None when no sidecar of the agent recorded it.
        StateOwnerUnknown when etcd cannot be asked and this sidecar has no record."""
        found = self._table.get(state_id)
        if found is not None:
            return found
        if not ID_RE.fullmatch(state_id) or self._store is None:
            return None  # not an id any record can have, or no etcd to ask (served alone)
        self.misses += 1
        key = self._keyspace.state_owner(self._agent, state_id)
        try:
            async with asyncio.timeout(self.timeout):
                kv = await self._store.get(key)
        except (TimeoutError, StoreError) as exc:
            err = StateOwnerUnknown(
                f"this sidecar has no record of which release issued {state_id!r:.140}, and "
                f"etcd did not answer ({type(exc).__name__}); it is never sent to a release "
                "that may not have issued it: retry shortly"
            )
            err.headers["Retry-After"] = str(RETRY_AFTER_S)
            raise err from exc
        if kv is not None:
            return self._table.adopt(kv, newer_only=True)
        event = self._waiting.setdefault(state_id, asyncio.Event())
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), self.wait)
        finally:
            self._waiting.pop(state_id, None)
        return self._table.get(state_id)
