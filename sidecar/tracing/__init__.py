"""OpenTelemetry traces: a span per model call (a filter, first in the chain) and per tool call
(``ToolSpans``, handed to the tool proxy), following the GenAI semantic conventions, under the
agent's W3C trace context and passed on to the provider and tool backends.

Off unless an OTLP endpoint is configured (``--otlp-endpoint`` or the standard
``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``). Off costs nothing: the filter is not in the chain,
the tool proxy holds no tracer, and the SDK (``holdfast[otel]``) is never imported.
"""

from __future__ import annotations

from sidecar.tracing.enable import TracingUnavailable, open_tracer
from sidecar.tracing.filter import TracingFilter
from sidecar.tracing.spans import Span, Tracer
from sidecar.tracing.tools import ToolSpans

__all__ = ["Span", "ToolSpans", "Tracer", "TracingFilter", "TracingUnavailable", "open_tracer"]
