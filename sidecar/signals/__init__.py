"""Functional-health signals per release and query category, measured on every exchange."""

from __future__ import annotations

from sidecar.signals.book import SignalBook, summary
from sidecar.signals.filter import SignalsFilter
from sidecar.signals.metrics import SignalMetrics

__all__ = ["SignalBook", "SignalMetrics", "SignalsFilter", "summary"]
