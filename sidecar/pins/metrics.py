"""Prometheus metrics of session pinning, registered in the sidecar's own registry."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from holdfast.tally import CounterFamily, Tally


class PinMetrics:
    def __init__(self, registry: CollectorRegistry, agent: str) -> None:
        self.agent = agent
        self.routing = CounterFamily(
            "holdfast_session_routing",
            "Requests by how their release was chosen: new session, pinned session, no session.",
            ["agent", "release", "kind"],
        )
        Tally(registry, self.routing)
        self.cached = Gauge(
            "holdfast_pins_cached", "Session pins held by this sidecar.", registry=registry
        )
        self.pending = Gauge(
            "holdfast_pin_writes_pending",
            "Pin writes queued for etcd (creates, refreshes, notices).",
            registry=registry,
        )
        self.write_failures = Counter(
            "holdfast_pin_write_failures",
            "Pin writes that etcd did not take (unreachable, lease gone); they are retried.",
            registry=registry,
        )
        self.conflicts = Counter(
            "holdfast_pin_conflicts",
            "Pin writes that lost a compare-and-swap; the stored pin was adopted.",
            registry=registry,
        )
        self.dropped = Counter(
            "holdfast_pin_writes_dropped",
            "Queued pin writes dropped because the queue reached --max-pending-pins.",
            registry=registry,
        )
        claims = Counter(
            "holdfast_pin_claims",
            "First turns of sessions this sidecar had no pin for, by what etcd answered: created "
            "(this sidecar pinned it), adopted (another sidecar had), fallback (etcd did not "
            "answer within --pin-create-timeout: decided locally, written later).",
            ["outcome"],
            registry=registry,
        )
        self.claims_created = claims.labels("created")
        self.claims_adopted = claims.labels("adopted")
        self.claims_fallback = claims.labels("fallback")

    def routed(self, release: str, kind: str) -> None:
        self.routing.inc((self.agent, release, kind))

    def bind(self, cached: Callable[[], int], pending: Callable[[], int]) -> None:
        """Read the gauges from their owners at scrape time instead of on every change."""
        self.cached.set_function(lambda: float(cached()))
        self.pending.set_function(lambda: float(pending()))
