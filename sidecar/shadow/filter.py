"""Shadow traffic as a pipeline filter: sample at open, hand the primary's answer over at the end.

The probe gets the neutral view of each event and of the final answer, decoded once by the
dialect for every filter, so the primary path pays nothing beyond handing references over.

This filter opens last (sidecar.app): a request another filter refuses (a budget, a contract)
never samples a shadow, and the shadow copies the body as it goes out, completion cap included.
The call itself starts when the primary's handler first waits (on the provider); a primary that
fails before that cancels it unstarted, and the runner still gives its slot back.

Provider-held state (OpenAI Responses): a request that continues state is not shadowed (the
shadow release does not hold it), and a shadow copy is sent with ``store: false`` and without
any state reference (the dialect's ``shadow_copy``), so shadowing leaves no state behind at the
shadow release and no id of it is ever recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from holdfast.dialects import Answer, EventView, StatefulRequest, ToolCall, stateful
from sidecar.config import ConfigState
from sidecar.pipeline import Exchange, Observer, Outcome
from sidecar.shadow.probe import Probe
from sidecar.shadow.runner import ShadowRunner


class _ShadowObserver(Observer):
    def __init__(self, probe: Probe, exchange: Exchange) -> None:
        self.probe = probe
        self.exchange = exchange

    def on_answer(self, status: int, answer: Answer | None) -> None:
        if status == 200:
            if answer is None:
                self.probe.abandon()
            else:
                self.probe.complete_answer(answer, self.exchange.elapsed())

    def on_event(self, view: EventView, data: bytes | None) -> bytes | None:
        self.probe.feed(view)
        return data

    def on_end(self, calls: Sequence[ToolCall]) -> None:
        self.probe.end(calls)

    def close(self, outcome: Outcome) -> None:
        if self.exchange.stream and outcome.completed:
            self.probe.complete_stream(outcome.elapsed_s)
        self.probe.abandon()  # no-op once completed: an error or a client gone has no answer


def _continues_state(exchange: Exchange) -> bool:
    """A request that continues provider-held state (``previous_response_id``) is not shadowed:
    the shadow release does not hold that state, and its answer to the bare new turn would be
    compared with an answer that had the whole conversation."""
    if stateful(exchange.dialect) is None:
        return False
    return cast(StatefulRequest, exchange.request).state_ref() is not None


class ShadowFilter:
    name = "shadow"

    def __init__(self, runner: ShadowRunner, config: ConfigState) -> None:
        self.runner = runner
        self.config = config

    def open(self, exchange: Exchange) -> Observer | None:
        snapshot = self.config.current
        if exchange.operation != "chat" or snapshot is None or _continues_state(exchange):
            return None
        probe = self.runner.probe(
            snapshot.route,
            exchange.resolved.release,
            snapshot.releases,
            exchange.dialect,
            exchange.request,
            exchange.request_id,
            agent_headers=exchange.headers,
            query=exchange.query,
        )
        return _ShadowObserver(probe, exchange) if probe is not None else None
