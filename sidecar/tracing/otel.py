"""The tracer over the OpenTelemetry SDK, exporting over OTLP/HTTP (the ``holdfast[otel]``
extra). Only a sidecar with tracing on imports this module, and with it the SDK.

Spans are batched and exported by the SDK's worker thread, off the event loop. The SDK reads the
standard variables itself: ``OTEL_TRACES_SAMPLER``/``_ARG`` (default: follow the agent's sampling
decision, sample everything else), ``OTEL_EXPORTER_OTLP_HEADERS``/``_TIMEOUT``/``_COMPRESSION``/
``_CERTIFICATE``, ``OTEL_BSP_*`` (batching), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_SERVICE_NAME``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Final

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from holdfast import __version__
from sidecar.tracing.attributes import ERROR_TYPE
from sidecar.tracing.spans import Attributes
from sidecar.tracing.spans import SpanKind as Kind

SCOPE: Final = "holdfast.sidecar"
KINDS: Final[dict[Kind, SpanKind]] = {"client": SpanKind.CLIENT, "internal": SpanKind.INTERNAL}
SHUTDOWN_TIMEOUT_S: Final = 5.0
_PROPAGATOR: Final = TraceContextTextMapPropagator()


class OtelSpan:
    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    @property
    def recording(self) -> bool:
        return self._span.is_recording()

    def set(self, attributes: Attributes) -> None:
        self._span.set_attributes(attributes)

    def rename(self, name: str) -> None:
        self._span.update_name(name)

    def fail(self, error_type: str, description: str = "") -> None:
        self._span.set_attribute(ERROR_TYPE, error_type)
        self._span.set_status(Status(StatusCode.ERROR, description or error_type))

    def context_headers(self) -> dict[str, str]:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(self._span))
        return carrier

    def end(self, end_ns: int | None = None) -> None:
        self._span.end(end_time=end_ns)


class OtelTracer:
    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer(SCOPE, __version__)

    def start(
        self,
        name: str,
        *,
        kind: Kind,
        parent: Mapping[str, str],
        attributes: Attributes,
        start_ns: int | None = None,
    ) -> OtelSpan:
        span = self._tracer.start_span(
            name,
            context=_PROPAGATOR.extract(parent),
            kind=KINDS[kind],
            attributes=attributes,
            start_time=start_ns,
        )
        return OtelSpan(span)

    async def close(self) -> None:
        # Flushing talks to the collector: in a thread, bounded, off the event loop.
        await asyncio.wait_for(asyncio.to_thread(self.provider.shutdown), SHUTDOWN_TIMEOUT_S)


def resource(*, agent: str, env: str, sidecar_id: str, environ: Mapping[str, str]) -> Resource:
    """The sidecar's identity on every span; ``OTEL_SERVICE_NAME`` and
    ``OTEL_RESOURCE_ATTRIBUTES`` still win where they say otherwise."""
    attrs = {
        "service.version": __version__,
        "service.instance.id": sidecar_id,
        "deployment.environment.name": env,
        "holdfast.agent": agent,
    }
    if not environ.get("OTEL_SERVICE_NAME"):
        attrs["service.name"] = "holdfast-sidecar"
    return Resource.create(attrs)


def tracer(
    *,
    endpoint: str,
    agent: str,
    env: str,
    sidecar_id: str,
    environ: Mapping[str, str],
    processor: SpanProcessor | None = None,
) -> OtelTracer:
    """A tracer exporting to the OTLP/HTTP traces ``endpoint`` (``processor``: another way out,
    such as a test's in-memory exporter)."""
    provider = TracerProvider(
        resource=resource(agent=agent, env=env, sidecar_id=sidecar_id, environ=environ)
    )
    provider.add_span_processor(processor or BatchSpanProcessor(OTLPSpanExporter(endpoint)))
    return OtelTracer(provider)
