"""What the tracing package needs of a tracer: start a span under the agent's trace context,
set attributes, end it. Implemented over the OpenTelemetry SDK by ``sidecar.tracing.otel``, which
only a sidecar with tracing on imports; the filter and the tool spans know only this protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

# An attribute value as OpenTelemetry takes it (homogeneous sequences of one primitive type).
AttributeValue = str | bool | int | float | Sequence[str] | Sequence[int]
Attributes = Mapping[str, AttributeValue]
SpanKind = Literal["client", "internal"]


class Span(Protocol):
    @property
    def recording(self) -> bool:
        """False when the sampler dropped the span: attributes would be thrown away."""
        ...

    def set(self, attributes: Attributes) -> None: ...

    def rename(self, name: str) -> None: ...

    def fail(self, error_type: str, description: str = "") -> None:
        """Mark the span failed: status ERROR and ``error.type``."""
        ...

    def context_headers(self) -> dict[str, str]:
        """W3C ``traceparent`` (and ``tracestate``) naming this span as the parent, for the
        call it makes (the provider, a tool backend)."""
        ...

    def end(self, end_ns: int | None = None) -> None: ...


class Tracer(Protocol):
    def start(
        self,
        name: str,
        *,
        kind: SpanKind,
        parent: Mapping[str, str],
        attributes: Attributes,
        start_ns: int | None = None,
    ) -> Span:
        """A span whose parent is the trace context in the headers ``parent`` (the agent's
        ``traceparent``); a new trace when they carry none or a malformed one."""
        ...

    async def close(self) -> None:
        """Export what is buffered (bounded in time) and stop."""
        ...


class NullSpan:
    """A span that records nothing: what a tracer that failed to start one hands back."""

    recording = False

    def set(self, attributes: Attributes) -> None:
        return None

    def rename(self, name: str) -> None:
        return None

    def fail(self, error_type: str, description: str = "") -> None:
        return None

    def context_headers(self) -> dict[str, str]:
        return {}

    def end(self, end_ns: int | None = None) -> None:
        return None
