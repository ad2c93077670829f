"""Prometheus metrics of shadow traffic, registered in the sidecar's own registry."""

from __future__ import annotations

from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram

SIMILARITY_BUCKETS: Final = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class ShadowMetrics:
    def __init__(self, registry: CollectorRegistry, agent: str) -> None:
        self.agent = agent
        self.requests = Counter(
            "holdfast_shadow_requests",
            "Sampled shadow requests by outcome: compared, skipped_busy, skipped_budget, error, "
            "abandoned (the primary failed or its client left).",
            ["agent", "shadow_release", "outcome"],
            registry=registry,
        )
        self.similarity = Histogram(
            "holdfast_shadow_similarity",
            "Word-level text similarity of a shadow answer to its primary answer (0 to 1).",
            ["agent", "shadow_release"],
            buckets=SIMILARITY_BUCKETS,
            registry=registry,
        )

    def outcome(self, shadow_release: str, outcome: str) -> None:
        self.requests.labels(self.agent, shadow_release, outcome).inc()

    def compared(self, shadow_release: str, similarity: float) -> None:
        self.similarity.labels(self.agent, shadow_release).observe(similarity)
