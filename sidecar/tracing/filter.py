"""One span per model call, as a filter: it opens first in the chain, so its span covers every
filter's decision and the relay, and ends when the exchange closes.

``open`` starts the span under the agent's ``traceparent`` (or a new trace) with the request's
facts and Holdfast's routing decisions, and puts the span's own context in the provider call's
headers. The answer is read from the neutral views the dialect decoded once for every filter
(usage, finish reasons, tool calls, the answering model), so the span is the same for every
dialect. At ``close`` it adds what the later filters decided, read where they publish it: the
budget's and contracts' response headers and the refusing error's code.

Tracing never fails a request: a span that cannot be made or finished is logged and dropped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final

from holdfast.dialects import Answer, EventView, RequestRefused, ToolCall
from holdfast.logs import get_logger
from sidecar.budgets import DEGRADED_HEADER, REMAINING_HEADER
from sidecar.contracts import REWRITTEN_HEADER, VIOLATION_HEADER
from sidecar.pipeline import Exchange, Observer, Outcome
from sidecar.prompts import VERSION_HEADER
from sidecar.routing import CATEGORY_HEADER, TENANT_HEADER
from sidecar.tracing import attributes as a
from sidecar.tracing.spans import AttributeValue, Span, Tracer

log = get_logger(__name__)

BUDGET_REFUSALS: Final = frozenset({"budget_exhausted", "price_unknown"})
FROM_REQUEST: Final = {CATEGORY_HEADER: "holdfast.category", TENANT_HEADER: "holdfast.tenant"}
FROM_FILTERS: Final = {
    REMAINING_HEADER: "holdfast.budget.remaining",
    DEGRADED_HEADER: "holdfast.budget.degraded_scope",
    VIOLATION_HEADER: "holdfast.contract.violations",
    REWRITTEN_HEADER: "holdfast.contract.rewritten",
    VERSION_HEADER: "holdfast.prompt.versions",
}


class _DroppedSpan(Observer):
    """A span the sampler dropped: nothing to read on the way back, only its end."""

    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def close(self, outcome: Outcome) -> None:
        try:
            self.span.end()
        except Exception:
            log.exception("trace_span_finish_failed")


class _ModelSpan(Observer):
    __slots__ = ("exchange", "facts", "release", "span")

    def __init__(self, span: Span, exchange: Exchange) -> None:
        self.span = span
        self.exchange = exchange
        self.release = exchange.resolved.release.name
        self.facts = a.AnswerFacts()

    def on_answer(self, status: int, answer: Answer | None) -> None:
        if answer is not None:
            self.facts.answer(answer)

    def on_event(self, view: EventView, data: bytes | None) -> bytes | None:
        self.facts.event(view)
        return data

    def on_end(self, calls: Sequence[ToolCall]) -> None:
        self.facts.calls([c.name for c in calls])

    def close(self, outcome: Outcome) -> None:
        try:
            self._finish(outcome)
        except Exception:
            log.exception("trace_span_finish_failed")

    def _finish(self, outcome: Outcome) -> None:
        span, exchange = self.span, self.exchange
        attrs = self.facts.attributes()
        if outcome.code != "ok":
            attrs["holdfast.outcome"] = outcome.code
        if outcome.status is not None:
            attrs[a.HTTP_STATUS] = outcome.status
        if outcome.reason:
            attrs["holdfast.refused_by"] = outcome.reason
        if exchange.first_byte is not None:
            attrs["holdfast.time_to_first_chunk_s"] = round(exchange.first_byte, 6)
        attrs.update(a.header_attributes(exchange.response_headers, FROM_FILTERS))
        admission = budget_admission(outcome, exchange.response_headers)
        if admission:
            attrs["holdfast.budget.admission"] = admission
        release = exchange.resolved.release
        if release.name != self.release:  # a budget degraded the request to a cheaper release
            attrs["holdfast.release"] = release.name
            attrs["holdfast.budget.degraded_from"] = self.release
            attrs[a.REQUEST_MODEL] = release.model
            span.rename(a.span_name(exchange.operation, release.model))
        span.set(attrs)
        if not outcome.completed:
            span.fail(outcome.reason or outcome.code)
        span.end()


def budget_admission(outcome: Outcome, headers: dict[str, str]) -> str:
    """What the budget decided: refused, degraded, admitted; "" when no budget applied (or a
    filter before it refused the request)."""
    if outcome.reason in BUDGET_REFUSALS:
        return "refused"
    if DEGRADED_HEADER in headers:
        return "degraded"
    if REMAINING_HEADER in headers:
        return "admitted"
    return ""


def sampling_attributes(exchange: Exchange) -> dict[str, AttributeValue]:
    """What the conventions ask for when a span starts, so that a sampler may decide on it."""
    release = exchange.resolved.release
    provider = exchange.dialect.provider_api
    return {
        a.OPERATION: exchange.operation,
        a.PROVIDER: provider,
        a.SYSTEM: provider,
        a.REQUEST_MODEL: release.model,
        **a.server_of(release.base_url),
    }


def request_attributes(exchange: Exchange) -> dict[str, AttributeValue]:
    """The rest of what is known when the span starts: the release, the routing decisions.

    Set only on a span the sampler kept. Each attribute costs the SDK and its encoder some 10 µs
    a span, so a span says what only it can: the agent, the sidecar and its version are the
    resource's; what a request did not decide (no flag, no experiment, no cap) is left out
    rather than written empty."""
    resolved = exchange.resolved
    release = resolved.release
    attrs: dict[str, AttributeValue] = {
        "holdfast.release": release.name,
        "holdfast.request_id": exchange.request_id,
        "holdfast.pin": resolved.kind,
    }
    if resolved.session is not None:
        attrs[a.CONVERSATION] = resolved.session
    if resolved.migrated_from is not None:
        attrs["holdfast.pin.migrated_from"] = resolved.migrated_from
    if resolved.experiment:
        attrs["holdfast.experiment"] = resolved.experiment
    if resolved.flag:
        attrs["holdfast.flags.evaluated"] = [resolved.flag]
        attrs["holdfast.flag.steered"] = resolved.flag_steered
    if release.contracts:
        attrs["holdfast.contracts"] = [
            f"{tool}@{version}" for tool, version in sorted(release.contracts.items())
        ][: a.MAX_LIST]
    try:
        cap, choices = exchange.request.output_cap()
    except RequestRefused:
        cap, choices = None, 1  # a later filter refuses it, and says why
    if cap is not None:
        attrs[a.REQUEST_MAX_TOKENS] = cap
    if choices != 1:
        attrs[a.REQUEST_CHOICES] = choices
    attrs.update(a.header_attributes(exchange.headers, FROM_REQUEST))
    return attrs


class TracingFilter:
    name = "tracing"

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def open(self, exchange: Exchange) -> Observer | None:
        try:
            span = self.tracer.start(
                a.span_name(exchange.operation, exchange.resolved.release.model),
                kind="client",
                parent=exchange.headers,
                attributes=sampling_attributes(exchange),
                start_ns=time.time_ns() - int(exchange.elapsed() * 1e9),
            )
            # A dropped span still passes the context on (sampled=0), as W3C asks.
            exchange.upstream_headers = (exchange.upstream_headers or {}) | span.context_headers()
            if not span.recording:
                return _DroppedSpan(span)
            span.set(request_attributes(exchange))
        except Exception:
            log.exception("trace_span_start_failed")
            return None
        return _ModelSpan(span, exchange)
