"""Talking to providers: the pooled HTTP client, credentials, typed errors."""

from __future__ import annotations

from sidecar.upstream.client import CONNECT_ERRORS, SidecarShutdown, Upstream, relayed_headers
from sidecar.upstream.surface import ProviderBody, ProviderResponse

__all__ = [
    "CONNECT_ERRORS",
    "ProviderBody",
    "ProviderResponse",
    "SidecarShutdown",
    "Upstream",
    "relayed_headers",
]
