"""Tracing on or off, from the settings: the SDK is imported here only when it is on."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from sidecar.settings import SidecarSettings
from sidecar.tracing.spans import Tracer


class TracingUnavailable(RuntimeError):
    """Tracing is configured but the OpenTelemetry SDK is not installed."""


def open_tracer(settings: SidecarSettings, environ: Mapping[str, str]) -> Tracer | None:
    """The sidecar's tracer when an OTLP endpoint is set; None (tracing off) otherwise."""
    if not settings.otlp_endpoint:
        return None
    try:
        otel = importlib.import_module("sidecar.tracing.otel")
    except ImportError as exc:
        raise TracingUnavailable(
            f"--otlp-endpoint is set but OpenTelemetry is not installed ({exc.name}): "
            "pip install 'holdfast[otel]'"
        ) from exc
    tracer: Tracer = otel.tracer(
        endpoint=settings.otlp_endpoint,
        agent=settings.agent,
        env=settings.env,
        sidecar_id=settings.effective_sidecar_id,
        environ=environ,
    )
    return tracer
