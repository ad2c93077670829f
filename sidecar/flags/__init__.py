"""Feature flags evaluated locally: the evaluator over the config snapshot, and OFREP for agents."""

from __future__ import annotations

from sidecar.flags.evaluator import FlagEvaluator, flags_of
from sidecar.flags.metrics import FlagMetrics
from sidecar.flags.ofrep import OfrepApi

__all__ = ["FlagEvaluator", "FlagMetrics", "OfrepApi", "flags_of"]
