"""Prometheus metrics of functional health, in the sidecar's own registry.

OpenTelemetry GenAI names where they exist (gen_ai.client.token.usage ->
``gen_ai_client_token_usage`` with ``gen_ai_token_type``, gen_ai.client.operation.duration,
gen_ai.server.time_to_first_token); Holdfast's own otherwise. Every per-request series is
labelled with release and category (capped per release, see sidecar.signal_categories).
``holdfast_release_info`` is the deployment marker: one series per release in a role (stable,
canary, shadow), valued with the time it took that role. Sessions' cumulative tokens and
latency are gauge histograms read from the signal book at scrape time (never per session id).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import GaugeHistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from holdfast.keyspace import Route
from holdfast.keyspace.session_spread import (
    SESSION_LATENCY_BOUNDS_MS,
    SESSION_TOKEN_BOUNDS,
    SessionSpread,
)
from holdfast.tally import CounterFamily, HistogramFamily, Tally
from sidecar.signals.book import Observation, error_class

TOKEN_BUCKETS: Final = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)
LATENCY_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                          60.0, 120.0)  # fmt: skip


class _SessionSpreads(Collector):
    """Gauge histograms of the tracked sessions' cumulative tokens and latency, per release."""

    def __init__(self, agent: str) -> None:
        self.agent = agent
        self.source: Callable[[], tuple[SessionSpread, ...]] = tuple

    def collect(self) -> Iterator[Metric]:
        tokens = GaugeHistogramMetricFamily(
            "holdfast_session_tokens",
            "Tracked sessions by cumulative tokens (in + out) so far, per release.",
            labels=["agent", "holdfast_release"],
        )
        latency = GaugeHistogramMetricFamily(
            "holdfast_session_duration_seconds",
            "Tracked sessions by cumulative request latency so far, per release.",
            labels=["agent", "holdfast_release"],
        )
        for spread in self.source():
            labels = [self.agent, spread.release]
            tokens.add_metric(
                labels, _cumulative(SESSION_TOKEN_BOUNDS, spread.tokens, 1.0), spread.tokens_sum
            )
            latency.add_metric(
                labels,
                _cumulative(SESSION_LATENCY_BOUNDS_MS, spread.latency_ms, 0.001),
                spread.latency_ms_sum / 1000,
            )
        yield tokens
        yield latency

    def describe(self) -> Iterator[Metric]:
        return iter(())


def _cumulative(
    bounds: tuple[int, ...], counts: tuple[int, ...], scale: float
) -> list[tuple[str, float]]:
    out, total = [], 0
    for bound, count in zip((*bounds, None), counts, strict=True):
        total += count
        out.append(("+Inf" if bound is None else str(float(bound * scale)), float(total)))
    return out


class SignalMetrics:
    def __init__(self, registry: CollectorRegistry, agent: str) -> None:
        self.agent = agent
        self.tokens = HistogramFamily(
            "gen_ai_client_token_usage",
            "Tokens per request by type (input, output), release and category.",
            ["agent", "holdfast_release", "holdfast_category", "gen_ai_token_type"],
            TOKEN_BUCKETS,
        )
        self.outcomes = CounterFamily(
            "holdfast_release_requests",
            "Proxied requests by release, category and error class (none: answered).",
            ["agent", "holdfast_release", "holdfast_category", "error_class"],
        )
        self.shapes = CounterFamily(
            "holdfast_answer_shape",
            "Answers by shape: empty, refusal (heuristic), tool_call, estimated (no usage).",
            ["agent", "holdfast_release", "holdfast_category", "shape"],
        )
        self.cost = CounterFamily(
            "holdfast_cost_usd",
            "Spend in US dollars from the price table (0 when the release has no price).",
            ["agent", "holdfast_release", "holdfast_category"],
        )
        self.duration = HistogramFamily(
            "gen_ai_client_operation_duration_seconds",
            "Time from request received to response finished, by operation, release, category.",
            ["agent", "gen_ai_operation_name", "holdfast_release", "holdfast_category"],
            LATENCY_BUCKETS,
        )
        self.ttft = HistogramFamily(
            "gen_ai_server_time_to_first_token_seconds",
            "Streaming: time from request received to the first relayed chunk.",
            ["agent", "holdfast_release", "holdfast_category"],
            LATENCY_BUCKETS,
        )
        Tally(
            registry, self.tokens, self.outcomes, self.shapes, self.cost, self.duration, self.ttft
        )
        self.sessions = _SessionSpreads(agent)
        registry.register(self.sessions)
        self.release_info = Gauge(
            "holdfast_release_info",
            "Deployment marker: a release in a role, valued with the Unix time it took the role.",
            ["agent", "holdfast_release", "model", "role"],
            registry=registry,
        )
        self._markers: dict[tuple[str, str, str], float] = {}

    def observe(self, obs: Observation) -> None:
        agent, release, category = self.agent, obs.release, obs.category
        klass = error_class(obs.code) or "none"
        self.outcomes.inc((agent, release, category, klass))
        self.duration.observe((agent, obs.operation, release, category), obs.latency_s)
        if obs.ttft_s is not None:
            self.ttft.observe((agent, release, category), obs.ttft_s)
        if not obs.answered:
            return
        self.tokens.observe((agent, release, category, "input"), obs.tokens_in)
        self.tokens.observe((agent, release, category, "output"), obs.tokens_out)
        if obs.empty:
            self.shapes.inc((agent, release, category, "empty"))
        if obs.refusal:
            self.shapes.inc((agent, release, category, "refusal"))
        if obs.tools:
            self.shapes.inc((agent, release, category, "tool_call"))
        if not obs.usage_known:
            self.shapes.inc((agent, release, category, "estimated"))
        if obs.cost_usd:
            self.cost.inc((agent, release, category), obs.cost_usd)

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
                    since = _role_since(route, role, release) or now
                wanted[key] = since
        for key in set(self._markers) - set(wanted):
            self.release_info.remove(self.agent, *key)
        for key, since in wanted.items():
            self.release_info.labels(self.agent, *key).set(since)
        self._markers = wanted


def _role_since(route: Route, role: str, release: str) -> float:
    """When ``release`` took ``role``, as far as the route record tells (a sidecar that starts
    later must not date a role from the route's last, unrelated change): a shadow's epoch, a
    rollout's start for its canary and its end for the stable it promoted; otherwise the
    route's last change, the best the record knows."""
    rollout = route.rollout
    if role == "shadow" and route.shadow is not None:
        return route.shadow.since
    if rollout is not None and rollout.release == release:
        if role == "canary":
            return rollout.started_at
        if role == "stable" and rollout.state == "done":
            return rollout.ended_at
    return route.updated_at
