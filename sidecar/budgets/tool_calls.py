"""Tool-call limits of session budgets: one MCP ``tools/call`` is one unit.

A ``session:ID`` budget with ``tool_calls`` N lets the session make N tool calls per window
through this sidecar (``holdfastctl budget set session:ID --tool-calls N --window 1h``). The
count is kept like a session's tokens: in a ledger of its own, with the same windows (calendar
or rolling), by the sidecar serving the session -- a session that two sidecars serve may make
N on each, as its token limit is spent on each. A call is reserved before it goes out
(synchronously, so concurrent calls cannot overshoot) and settled as one call once the backend
was asked, or as none when it never was (arguments refused by the contract, an open circuit).

The chat path never sees these meters: the budget's tool-call limit is metered here, under
a copy of the budget whose unit is calls, and its tokens and cost by the request path's ledger.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from holdfast.keyspace.budget import Budget
from sidecar.budgets.ledger import Ledger, Refusal, Reservation
from sidecar.config import ConfigState


@dataclass(frozen=True, slots=True)
class ToolCallRefused:
    scope: str
    retry_after: int
    message: str


def _refused(refusal: Refusal) -> ToolCallRefused:
    meter = refusal.meter
    kind = " (rolling)" if meter.rolling else ""
    text = (
        f"the tool-call budget {meter.scope} is exhausted: limit {meter.limit} tool calls per "
        f"{meter.budget.window}{kind}, {meter.used} used, so the tool was not called; retry "
        f"after {refusal.retry_after}s"
    )
    return ToolCallRefused(meter.scope, refusal.retry_after, text)


class ToolCallBudget:
    def __init__(
        self, config: ConfigState, *, agent: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.ledger = Ledger(agent=agent)
        self.clock = clock
        self._source: Mapping[str, object] | None = None
        self._counted: dict[str, Budget] = {}

    def _sync(self, now: float) -> None:
        snapshot = self.config.current
        budgets = snapshot.of_kind("budgets") if snapshot is not None else {}
        if budgets is not self._source:
            self._source = budgets
            # The ledger meters tokens: a copy of each budget whose token limit is its tool
            # calls is a meter of calls with every window rule of the ledger.
            self._counted = {
                key: dataclasses.replace(b, tokens=b.tool_calls, cost=0)
                for key, b in budgets.items()
                if isinstance(b, Budget) and b.tool_calls
            }
        self.ledger.sync(self._counted, now)

    def admit(self, session: str | None) -> Reservation | ToolCallRefused | None:
        """Reserve one call of ``session`` (its pin key); None when no limit applies."""
        if session is None:
            return None
        now = self.clock()
        self._sync(now)
        meters = self.ledger.applicable([f"session:{session}"], now)
        if not meters:
            return None
        reservation, refusals = self.ledger.admit(meters, 1, now)
        if reservation is None:
            return _refused(refusals[0])
        return reservation

    def settle(self, reservation: Reservation, *, called: bool) -> None:
        Ledger.settle(reservation, 1 if called else 0, estimated=False)

    def status(self) -> list[dict[str, Any]]:
        now = self.clock()
        self._sync(now)
        out = []
        for scope, meter in sorted(self.ledger.meters.items()):
            meter.rotate(now)
            out.append(
                {
                    "scope": scope,
                    "limit": meter.limit,
                    "window": meter.budget.window,
                    "used": meter.used,
                    "remaining": meter.remaining,
                    "refused": meter.tally.refused,
                }
            )
        return out
