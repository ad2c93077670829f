"""The request pipeline's extension point: filters that see one proxied exchange end to end.

Like Envoy's HTTP filters, each concern that rides on the data path (shadow traffic, budgets,
tool contracts, health signals...) is a filter with one ``open`` per request, in a fixed order.
``open`` may edit the body before it goes upstream, add response headers, or refuse the request
with a ``SidecarError``; it returns an observer (or None when it has nothing to do for this
request, which keeps the path free of per-chunk calls). Observers see the answer:

* ``on_body`` -- a non-streaming answer (any status); it may return a replacement body;
* ``on_chunk`` -- streaming, raw chunks as relayed, observe only (zero parsing cost);
* ``on_event`` -- streaming, whole SSE events (``data: ...\\n\\n``), only for observers with
  ``wants_events``; it may rewrite an event or drop it (return None);
* ``close`` -- exactly once, whatever happened, with the outcome.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from holdfast.logs import get_logger
from sidecar.errors import SidecarError, spec_for
from sidecar.routing.resolve import Resolved

log = get_logger(__name__)


@dataclass(slots=True, kw_only=True)
class Exchange:
    """One proxied request as the filters see it."""

    operation: str  # "chat" | "embeddings"
    body: dict[str, Any]  # what goes upstream (model already rewritten); editable in open()
    resolved: Resolved
    request_id: str
    headers: Mapping[str, str]  # the agent's request headers
    stream: bool
    started: float = field(default_factory=time.perf_counter)
    response_headers: dict[str, str] = field(default_factory=dict)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


@dataclass(frozen=True, slots=True)
class Outcome:
    """How an exchange ended: ``code`` is the metrics outcome ("ok", "upstream_5xx",
    "client_disconnected", an error code...); ``completed`` when the agent got a whole answer;
    ``reason`` is the refusing error's code when a later filter refused the request."""

    code: str
    status: int | None
    elapsed_s: float
    completed: bool
    reason: str = ""


class Observer:
    """Base observer: every hook does nothing, so a filter overrides only what it needs."""

    wants_events: bool = False

    def on_body(self, status: int, body: bytes) -> bytes:
        return body

    def on_chunk(self, chunk: bytes) -> None:
        return None

    def on_event(self, event: bytes) -> bytes | None:
        return event

    def close(self, outcome: Outcome) -> None:
        return None


class ExchangeFilter(Protocol):
    name: str

    def open(self, exchange: Exchange) -> Observer | None: ...


class Chain:
    """The observers one request opened, driven in filter order."""

    def __init__(self, observers: Sequence[tuple[str, Observer]]) -> None:
        self._observers = list(observers)
        self._eventful = [o for _, o in self._observers if o.wants_events]
        self._closed = False

    @classmethod
    def open(cls, filters: Sequence[ExchangeFilter], exchange: Exchange) -> Chain:
        opened: list[tuple[str, Observer]] = []
        for f in filters:
            try:
                observer = f.open(exchange)
            except BaseException as exc:
                # a refusal: those already opened must learn the request never went out
                reason = spec_for(exc).code if isinstance(exc, SidecarError) else ""
                cls(opened).close(Outcome("refused", None, exchange.elapsed(), False, reason))
                raise
            if observer is not None:
                opened.append((f.name, observer))
        return cls(opened)

    @property
    def wants_events(self) -> bool:
        return bool(self._eventful)

    def body(self, status: int, body: bytes) -> bytes:
        for _, observer in self._observers:
            body = observer.on_body(status, body)
        return body

    def chunk(self, chunk: bytes) -> None:
        for _, observer in self._observers:
            observer.on_chunk(chunk)

    def event(self, event: bytes) -> bytes | None:
        for observer in self._eventful:
            kept = observer.on_event(event)
            if kept is None:
                return None
            event = kept
        return event

    def close(self, outcome: Outcome) -> None:
        if self._closed:
            return
        self._closed = True
        for name, observer in self._observers:
            try:
                observer.close(outcome)
            except Exception:  # one filter's bookkeeping must never fail the request
                log.exception("filter_close_failed", filter=name)
