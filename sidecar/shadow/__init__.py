"""Shadow traffic: a sample of requests sent to the shadow release too, and the comparison of
the two answers."""

from __future__ import annotations

from sidecar.shadow.filter import ShadowFilter
from sidecar.shadow.metrics import ShadowMetrics
from sidecar.shadow.runner import ShadowRunner

__all__ = ["ShadowFilter", "ShadowMetrics", "ShadowRunner"]
