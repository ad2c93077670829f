"""Prometheus metrics of flag evaluation, registered in the sidecar's own registry."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter


class FlagMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.evaluations = Counter(
            "holdfast_flag_evaluations",
            "Flag evaluations served over OFREP, by flag and reason (error code on errors); "
            "routing's evaluations are not counted here.",
            ["flag", "reason"],
            registry=registry,
        )
        self.ofrep = Counter(
            "holdfast_ofrep_requests",
            "OFREP requests, by endpoint (single, bulk) and HTTP status.",
            ["endpoint", "status"],
            registry=registry,
        )
        self._children: dict[tuple[str, str], Any] = {}

    def evaluated(self, flag: str, reason: str) -> None:
        # Children cached: labels() costs on every call and this is the hot path.
        child = self._children.get((flag, reason))
        if child is None:
            child = self._children[(flag, reason)] = self.evaluations.labels(flag, reason)
        child.inc()
