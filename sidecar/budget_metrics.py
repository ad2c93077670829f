"""Prometheus view of the budget ledger, read at scrape time, plus the charged-token counters."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from sidecar.budget_ledger import Ledger, Meter


class _LedgerCollector(Collector):
    def __init__(self, ledger: Ledger, agent: str) -> None:
        self.ledger = ledger
        self.agent = agent

    def describe(self) -> list[Any]:
        return []  # labels come and go with the configured budgets

    def collect(self) -> Iterator[GaugeMetricFamily]:
        fams = {
            "spent": "Tokens settled against the scope in the current window, by this sidecar.",
            "reserved": "Tokens reserved by requests in flight on this sidecar.",
            "allowance": "Tokens this sidecar may admit in the window (limit, or its fleet slice).",
            "remaining": "Tokens left in the scope (fleet scopes: as of the last slice update).",
            "limit": "The scope's configured limit per window.",
            "estimated": "Part of the spent tokens charged from estimates (no provider usage).",
        }
        families = {
            name: GaugeMetricFamily(
                f"holdfast_budget_{name}_tokens", doc, labels=["agent", "scope"]
            )
            for name, doc in fams.items()
        }
        requests = GaugeMetricFamily(
            "holdfast_budget_window_requests",
            "Requests in the current window by admission result.",
            labels=["agent", "scope", "result"],
        )
        for scope, meter in sorted(self.ledger.meters.items()):
            for name, value in _values(meter).items():
                families[name].add_metric([self.agent, scope], float(value))
            t = meter.tally
            for result, count in (
                ("admitted", t.admitted),
                ("refused", t.refused),
                ("degraded", t.degraded),
            ):
                requests.add_metric([self.agent, scope, result], float(count))
        yield from families.values()
        yield requests


def _values(meter: Meter) -> dict[str, int]:
    return {
        "spent": meter.tally.spent,
        "reserved": meter.tally.reserved,
        "allowance": meter.allowance,
        "remaining": meter.remaining,
        "limit": meter.budget.tokens,
        "estimated": meter.tally.estimated,
    }


def meter_status(meter: Meter) -> dict[str, Any]:
    """One scope as /status shows it."""
    b = meter.budget
    return {
        "scope": b.scope,
        "window": f"rolling {b.window}" if meter.rolling else meter.tally.span.id,
        "window_ends_at": None if meter.rolling else meter.tally.span.end,
        "fleet": b.fleet,
        "on_exhausted": b.on_exhausted,
        **_values(meter),
        "returned": meter.returned,
        "fleet_used": meter.fleet_used if b.fleet else None,
        "admitted": meter.tally.admitted,
        "refused": meter.tally.refused,
        "degraded": meter.tally.degraded,
    }


class BudgetMetrics:
    def __init__(self, registry: CollectorRegistry, agent: str, ledger: Ledger) -> None:
        registry.register(_LedgerCollector(ledger, agent))
        self._charged = Counter(
            "holdfast_budget_charged_tokens",
            "Tokens charged to budgets, by part and whether they were estimated.",
            ["agent", "part", "estimated"],
            registry=registry,
        )
        self._children = {
            (part, est): self._charged.labels(agent, part, "true" if est else "false")
            for part in ("prompt", "completion")
            for est in (True, False)
        }

    def charged(self, prompt: int, completion: int, *, estimated: bool) -> None:
        if prompt:
            self._children[("prompt", estimated)].inc(prompt)
        if completion:
            self._children[("completion", estimated)].inc(completion)
