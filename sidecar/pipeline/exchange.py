"""The request pipeline's extension point: filters that see one proxied exchange end to end.

Like Envoy's HTTP filters, each concern that rides on the data path (shadow traffic, budgets,
tool contracts, health signals...) is a filter with one ``open`` per request, in the order of
``sidecar.pipeline.chain.ORDER``. ``open`` reads the request through its dialect's neutral view
(``exchange.request``), may edit it before it goes upstream, add response headers, or refuse the
request with a ``SidecarError``; it returns an observer (or None when it has nothing to do for
this request). The answer is decoded once, by the dialect, for every observer:

* ``on_answer`` -- a non-streamed answer (any status) and its neutral view (None when it is
  not one the dialect can read, e.g. an error body);
* ``on_event`` -- streaming: each whole SSE event's neutral view, and the bytes about to be
  written for it. Observers run in reverse filter order on the way back, as Envoy's encoder
  filters do, and one with ``rewrites`` may replace those bytes, hold them (return b"") or
  drop them (return None); the others return them unchanged;
* ``on_end`` -- the stream ended whole: the tool calls still open are complete;
* ``close`` -- exactly once, whatever happened, with the outcome.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from holdfast.dialects import Answer, Dialect, EventView, RequestView, StreamDecoder, ToolCall
from holdfast.logs import get_logger
from sidecar.errors import SidecarError, spec_for
from sidecar.routing import Resolved

log = get_logger(__name__)


@dataclass(slots=True, kw_only=True)
class Exchange:
    """One proxied request as the filters see it."""

    dialect: Dialect
    request: RequestView  # the body that goes upstream (model already rewritten), editable
    resolved: Resolved
    request_id: str
    headers: Mapping[str, str]  # the agent's request headers
    query: str = ""  # the agent's query string, passed on to the provider as sent
    decoder: StreamDecoder | None = None  # a stream's, shared by the relay and the filters
    started: float = field(default_factory=time.perf_counter)
    first_byte: float | None = None  # seconds from start to the answer's first byte (streams)
    response_headers: dict[str, str] = field(default_factory=dict)
    # Headers a filter adds to the provider call (the trace context); None: none, no allocation.
    upstream_headers: dict[str, str] | None = None

    @property
    def operation(self) -> str:
        """The neutral kind of request: "chat" (generation) or "embeddings"."""
        return self.dialect.operation

    @property
    def stream(self) -> bool:
        return self.request.stream

    @property
    def body(self) -> dict[str, Any]:
        return self.request.body

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


# The outcome of a first turn that etcd settled to another release: nothing reached the agent,
# the request is served again at the other release, and this exchange counts for nothing.
SUPERSEDED: Final = "superseded"


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

    rewrites: bool = False

    def on_answer(self, status: int, answer: Answer | None) -> None:
        return None

    def on_event(self, view: EventView, data: bytes | None) -> bytes | None:
        return data

    def on_end(self, calls: Sequence[ToolCall]) -> None:
        return None

    def close(self, outcome: Outcome) -> None:
        return None


class ExchangeFilter(Protocol):
    name: str

    def open(self, exchange: Exchange) -> Observer | None: ...


class Chain:
    """The observers one request opened, driven in filter order (events in reverse)."""

    __slots__ = ("_closed", "_observers", "_reverse")

    def __init__(self, observers: Sequence[tuple[str, Observer]]) -> None:
        self._observers = list(observers)
        self._reverse = [o for _, o in reversed(self._observers)]
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

    def __bool__(self) -> bool:
        return bool(self._observers)

    def answer(self, status: int, answer: Answer | None) -> None:
        for _, observer in self._observers:
            observer.on_answer(status, answer)

    def event(self, view: EventView, data: bytes) -> bytes | None:
        out: bytes | None = data
        for observer in self._reverse:
            out = observer.on_event(view, out)
        return out

    def end(self, calls: Sequence[ToolCall]) -> None:
        for _, observer in self._observers:
            observer.on_end(calls)

    def close(self, outcome: Outcome) -> None:
        if self._closed:
            return
        self._closed = True
        for name, observer in self._observers:
            try:
                observer.close(outcome)
            except Exception:  # one filter's bookkeeping must never fail the request
                log.exception("filter_close_failed", filter=name)
