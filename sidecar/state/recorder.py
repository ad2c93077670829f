"""Records which release issued the state ids in an answer, as a filter of the chain.

It opens after the budget filter, so it sees the release that really served the request (a
budget's degrade included). A whole answer's id is recorded when the answer is decoded, a
stream's when ``response.created`` announces it -- in both cases before the agent can have
read the id, so the record is on its way to etcd before a continuation can name it. Answers the
provider does not store (``store: false``) are not recorded: nothing could continue them.

The session an id is recorded in is the request's; a chain that started without one is named
after its first response id, and continuing it opens that session (sidecar.state.route).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

from holdfast.dialects import Answer, EventView, StatefulRequest, StateKind
from holdfast.dialects import stateful as stateful_of
from holdfast.keyspace import RecordError, StateOwner
from holdfast.logs import get_logger
from sidecar.pins import StateTable
from sidecar.pipeline import Exchange, Observer, Outcome

log = get_logger(__name__)


class _Recorder(Observer):
    __slots__ = ("conversation", "exchange", "owner", "stores")

    def __init__(
        self, owner: StateFilter, exchange: Exchange, stores: bool, conversation: str | None
    ) -> None:
        self.owner = owner
        self.exchange = exchange
        self.stores = stores
        self.conversation = conversation

    def on_answer(self, status: int, answer: Answer | None) -> None:
        if status >= 400:
            return
        if answer is not None and answer.issued and self.stores:
            self.owner.record(self.exchange, answer.issued, "response")
        if self.conversation is not None:
            self.owner.record(self.exchange, self.conversation, "conversation")

    def on_event(self, view: EventView, data: bytes | None) -> bytes | None:
        if view.issued and self.stores:
            self.owner.record(self.exchange, view.issued, "response")
        return data

    def close(self, outcome: Outcome) -> None:
        if self.exchange.stream and self.conversation is not None and outcome.completed:
            self.owner.record(self.exchange, self.conversation, "conversation")


class StateFilter:
    name = "state"

    def __init__(
        self, agent: str, table: StateTable, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.agent = agent
        self.table = table
        self._clock = clock
        self.recorded = 0

    def open(self, exchange: Exchange) -> Observer | None:
        if stateful_of(exchange.dialect) is None:
            return None
        request = cast(StatefulRequest, exchange.request)
        ref = request.state_ref()
        conversation = (
            ref.id
            if ref is not None and ref.kind == "conversation" and self.table.get(ref.id) is None
            else None
        )
        if not request.stores and conversation is None:
            return None
        return _Recorder(self, exchange, request.stores, conversation)

    def record(self, exchange: Exchange, state_id: str, kind: StateKind) -> None:
        resolved = exchange.resolved
        now = self._clock()
        try:
            owner = StateOwner(
                agent=self.agent,
                id=state_id,
                kind=kind,
                release=resolved.release.name,
                session=resolved.session or state_id,
                issued_at=now,
                touched_at=now,
            )
        except RecordError as exc:
            # an id outside the key alphabet cannot be recorded: continuing it is then a 404
            log.warning("state_id_unrecordable", kind=kind, reason=str(exc))
            return
        self.table.record(owner)
        self.recorded += 1
