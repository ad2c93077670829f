"""Prometheus metrics of functional health, in the sidecar's own registry.

OpenTelemetry GenAI names where they exist (gen_ai.client.token.usage ->
``gen_ai_client_token_usage`` with ``gen_ai_token_type``); Holdfast's own otherwise. Every series
is labelled with release and category. ``holdfast_release_info`` is the deployment marker: one
series per release in a role (stable, canary, shadow), valued with the time it took that role.
"""

from __future__ import annotations

from typing import Any, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from holdfast.keyspace import Route
from sidecar.signal_book import Observation, error_class

TOKEN_BUCKETS: Final = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)


class SignalMetrics:
    def __init__(self, registry: CollectorRegistry, agent: str) -> None:
        self.agent = agent
        self.tokens = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per request by type (input, output), release and category.",
            ["agent", "holdfast_release", "holdfast_category", "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.outcomes = Counter(
            "holdfast_release_requests",
            "Proxied requests by release, category and error class (none: answered).",
            ["agent", "holdfast_release", "holdfast_category", "error_class"],
            registry=registry,
        )
        self.shapes = Counter(
            "holdfast_answer_shape",
            "Answers by shape: empty, refusal (heuristic), tool_call, estimated (no usage).",
            ["agent", "holdfast_release", "holdfast_category", "shape"],
            registry=registry,
        )
        self.cost = Counter(
            "holdfast_cost_usd",
            "Spend in US dollars from the price table (0 when the release has no price).",
            ["agent", "holdfast_release", "holdfast_category"],
            registry=registry,
        )
        self.release_info = Gauge(
            "holdfast_release_info",
            "Deployment marker: a release in a role, valued with the Unix time it took the role.",
            ["agent", "holdfast_release", "model", "role"],
            registry=registry,
        )
        self._children: dict[tuple[str, ...], Any] = {}
        self._markers: dict[tuple[str, str, str], float] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(self.agent, *labels)
        return child

    def observe(self, obs: Observation) -> None:
        release, category = obs.release, obs.category
        klass = error_class(obs.code) or "none"
        self._child(self.outcomes, release, category, klass).inc()
        if not obs.answered:
            return
        self._child(self.tokens, release, category, "input").observe(obs.tokens_in)
        self._child(self.tokens, release, category, "output").observe(obs.tokens_out)
        for shape, hit in (
            ("empty", obs.empty),
            ("refusal", obs.refusal),
            ("tool_call", bool(obs.tools)),
            ("estimated", not obs.usage_known),
        ):
            if hit:
                self._child(self.shapes, release, category, shape).inc()
        if obs.cost_usd:
            self._child(self.cost, release, category).inc(obs.cost_usd)

    def mark_route(self, route: Route | None, models: dict[str, str], now: float) -> None:
        """Keep one marker per (release, role) of the current route; a new role starts now
        (or at the rollout's start for the rollout's release)."""
        wanted: dict[tuple[str, str, str], float] = {}
        if route is not None:
            roles = [("stable", route.stable)]
            if route.canary and route.canary_percent > 0:
                roles.append(("canary", route.canary))
            if route.shadow is not None and route.shadow.percent > 0:
                roles.append(("shadow", route.shadow.release))
            for role, release in roles:
                key = (release, models.get(release, ""), role)
                since = self._markers.get(key)
                if since is None:
                    rollout = route.rollout
                    started = rollout.started_at if rollout and rollout.release == release else 0
                    since = started or route.updated_at or now
                wanted[key] = since
        for key in set(self._markers) - set(wanted):
            self.release_info.remove(self.agent, *key)
        for key, since in wanted.items():
            self.release_info.labels(self.agent, *key).set(since)
        self._markers = wanted
