"""One span per call through ``POST /tools/{tool}``: ``execute_tool {tool}`` under the agent's
trace context, its own context sent on to the tool's backend. It satisfies the tool proxy's
``ToolTracer`` (sidecar.contracts), so the proxy knows nothing of OpenTelemetry.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from holdfast.logs import get_logger
from sidecar.routing import Resolved
from sidecar.tracing import attributes as a
from sidecar.tracing.spans import AttributeValue, NullSpan, Span, Tracer

log = get_logger(__name__)


class _ToolSpan:
    __slots__ = ("span",)

    def __init__(self, span: Span) -> None:
        self.span = span

    def context_headers(self) -> dict[str, str]:
        try:
            return self.span.context_headers()
        except Exception:
            log.exception("trace_context_failed")
            return {}

    def served(self, resolved: Resolved, contract: str, backend: str, outcome: str) -> None:
        """The call got as far as its backend (or its contract stopped it): who and how."""
        try:
            attrs: dict[str, AttributeValue] = {
                "holdfast.release": resolved.release.name,
                "holdfast.pin": resolved.kind,
                "holdfast.contract": contract,
                "holdfast.tool.outcome": outcome,
                **a.server_of(backend),
            }
            if resolved.session is not None:
                attrs[a.CONVERSATION] = resolved.session
            self.span.set(attrs)
            if outcome != "ok":
                self.span.fail(outcome)
        except Exception:
            log.exception("trace_span_finish_failed")

    def failed(self, code: str) -> None:
        """The agent got an HTTP error (its own mistake, or the sidecar's)."""
        try:
            self.span.fail(code)
        except Exception:
            log.exception("trace_span_finish_failed")

    def end(self) -> None:
        try:
            self.span.end()
        except Exception:
            log.exception("trace_span_finish_failed")


class ToolSpans:
    def __init__(self, tracer: Tracer, agent: str) -> None:
        self.tracer = tracer
        self.agent = agent

    def tool_call(self, tool: str, headers: Mapping[str, str], request_id: str) -> _ToolSpan:
        try:
            return _ToolSpan(self._start(tool, headers, request_id))
        except Exception:
            log.exception("trace_span_start_failed")
            return _ToolSpan(NullSpan())

    def _start(self, tool: str, headers: Mapping[str, str], request_id: str) -> Span:
        return self.tracer.start(
            a.span_name(a.EXECUTE_TOOL, tool),
            kind="internal",
            parent=headers,
            attributes={
                a.OPERATION: a.EXECUTE_TOOL,
                a.TOOL_NAME: tool,
                a.TOOL_TYPE: a.TOOL_KIND,
                "holdfast.request_id": request_id,
            },
            start_ns=time.time_ns(),
        )
