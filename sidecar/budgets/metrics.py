"""Prometheus view of the budget ledger, read at scrape time, plus the charged-token counters.

Token meters are ``holdfast_budget_<name>_tokens``; cost meters (``usd:<scope>`` in the
ledger) are ``holdfast_budget_<name>_usd`` with the plain scope as label.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from holdfast.dialects.base import USAGE_REJECTED
from holdfast.keyspace.price import MICROS, usd
from sidecar.budgets.ledger import Ledger
from sidecar.budgets.meter import Meter

if TYPE_CHECKING:
    from sidecar.budgets.queue import AdmissionQueue

# Seconds a request waited for budget: from a settlement's few milliseconds to a queue timeout.
WAIT_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class _LedgerCollector(Collector):
    def __init__(self, ledger: Ledger, agent: str) -> None:
        self.ledger = ledger
        self.agent = agent
        self.queue: AdmissionQueue | None = None

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
            (name, unit): GaugeMetricFamily(
                f"holdfast_budget_{name}_{unit}",
                doc if unit == "tokens" else doc.replace("Tokens", "US dollars"),
                labels=["agent", "scope"],
            )
            for name, doc in fams.items()
            for unit in ("tokens", "usd")
        }
        requests = GaugeMetricFamily(
            "holdfast_budget_window_requests",
            "Requests in the current window by admission result.",
            labels=["agent", "scope", "result"],
        )
        waiting = GaugeMetricFamily(
            "holdfast_budget_waiting_requests",
            "Requests waiting for room in the scope now (on this sidecar).",
            labels=["agent", "scope"],
        )
        queued = GaugeMetricFamily(
            "holdfast_budget_queued_requests",
            "Requests waiting for budget on this sidecar now, all scopes.",
            labels=["agent"],
        )
        demand = self.queue.demand() if self.queue is not None else {}
        queued.add_metric([self.agent], float(self.queue.waiting if self.queue else 0))
        for _, meter in sorted(self.ledger.meters.items()):
            scale = MICROS if meter.cost else 1
            for name, value in _values(meter).items():
                families[(name, meter.unit)].add_metric([self.agent, meter.scope], value / scale)
            if meter.cost and meter.budget.tokens:
                continue  # one request count per scope: the token meter's when there is one
            t = meter.tally
            for result, count in (
                ("admitted", t.admitted),
                ("refused", t.refused),
                ("refused_spent", t.refused - t.refused_wait),
                ("refused_could_not_wait", t.refused_wait),
                ("degraded", t.degraded),
            ):
                requests.add_metric([self.agent, meter.scope, result], float(count))
            waiting.add_metric([self.agent, meter.scope], float(demand.get(meter.id, (0,))[0]))
        yield from families.values()
        yield requests
        yield waiting
        yield queued


def _values(meter: Meter) -> dict[str, int]:
    return {
        "spent": meter.tally.spent,
        "reserved": meter.tally.reserved,
        "allowance": meter.allowance,
        "remaining": meter.remaining,
        "limit": meter.limit,
        "estimated": meter.tally.estimated,
    }


def meter_status(meter: Meter, demand: tuple[int, int, int] = (0, 0, 0)) -> dict[str, Any]:
    """One meter as /status shows it (cost meters: amounts as USD strings); ``demand``: the
    requests waiting for it (count, what they need together, the largest need)."""
    b = meter.budget
    values: dict[str, Any] = _values(meter)
    if meter.cost:
        values = {k: usd(v) for k, v in values.items()}
    return {
        "scope": b.scope,
        "unit": meter.unit,
        "window": f"rolling {b.window}" if meter.rolling else meter.tally.span.id,
        "window_ends_at": None if meter.rolling else meter.tally.span.end,
        "fleet": b.fleet,
        "on_exhausted": b.on_exhausted,
        **values,
        "returned": usd(meter.returned) if meter.cost else meter.returned,
        "fleet_used": (usd(meter.fleet_used) if meter.cost else meter.fleet_used)
        if b.fleet
        else None,
        "admitted": meter.tally.admitted,
        "refused": meter.tally.refused,
        "refused_spent": meter.tally.refused - meter.tally.refused_wait,
        "refused_could_not_wait": meter.tally.refused_wait,
        "degraded": meter.tally.degraded,
        "waiting": demand[0],
        "queued": usd(demand[1]) if meter.cost else demand[1],
        "queue_timeout": b.queue_timeout,
        "fit_cap": b.fit_cap,
    }


class _UsageRejectedCollector(Collector):
    """Provider usage refused as absurd (holdfast.dialects.checked_usage), by where it was read."""

    def __init__(self, agent: str) -> None:
        self.agent = agent

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "holdfast_provider_usage_rejected",
            "Provider usage counts refused as absurd (estimated instead), by where read.",
            labels=["agent", "where"],
        )
        for where, count in sorted(USAGE_REJECTED.items()):
            family.add_metric([self.agent, where], float(count))
        yield family


class BudgetMetrics:
    def __init__(self, registry: CollectorRegistry, agent: str, ledger: Ledger) -> None:
        self._ledger_collector = _LedgerCollector(ledger, agent)
        registry.register(self._ledger_collector)
        registry.register(_UsageRejectedCollector(agent))
        self.agent = agent
        self._charged = Counter(
            "holdfast_budget_charged_tokens",
            "Tokens charged to budgets, by release, part and whether they were estimated.",
            ["agent", "release", "part", "estimated"],
            registry=registry,
        )
        self._children: dict[tuple[str, str, bool], Any] = {}
        cost = Counter(
            "holdfast_budget_charged_usd",
            "US dollars charged to cost budgets, by whether they were estimated.",
            ["agent", "estimated"],
            registry=registry,
        )
        self._cost = {est: cost.labels(agent, "true" if est else "false") for est in (True, False)}
        self.first_slice_waits = Counter(
            "holdfast_budget_first_slice_waits",
            "Requests that waited for this sidecar's first slice of a fleet-wide budget.",
            ["agent"],
            registry=registry,
        ).labels(agent)
        wait = Histogram(
            "holdfast_budget_wait_seconds",
            "How long requests waited for budget, by how the wait ended: admitted, spent "
            "(waiting could no longer help), timeout, queue_full, hung_up, unmetered.",
            ["agent", "result"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self._waits = {
            r: wait.labels(agent, r)
            for r in ("admitted", "spent", "timeout", "queue_full", "hung_up", "unmetered")
        }
        refusals = Counter(
            "holdfast_budget_refusals",
            "Requests refused by a budget: spent (waiting could not help) or could_not_wait.",
            ["agent", "reason"],
            registry=registry,
        )
        self._refusals = {r: refusals.labels(agent, r) for r in ("spent", "could_not_wait")}

    def bind_queue(self, queue: AdmissionQueue) -> None:
        """Read the requests waiting for budget from ``queue`` at scrape time."""
        self._ledger_collector.queue = queue

    def waited(self, seconds: float, result: str) -> None:
        self._waits[result].observe(seconds)

    def refused(self, reason: str) -> None:
        self._refusals[reason].inc()

    def _child(self, release: str, part: str, estimated: bool) -> Any:
        key = (release, part, estimated)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._charged.labels(
                self.agent, release, part, "true" if estimated else "false"
            )
        return child

    def charged(
        self,
        prompt: int,
        completion: int,
        *,
        estimated: bool,
        micros: int = 0,
        release: str = "",
    ) -> None:
        if prompt:
            self._child(release, "prompt", estimated).inc(prompt)
        if completion:
            self._child(release, "completion", estimated).inc(completion)
        if micros:
            self._cost[estimated].inc(micros / MICROS)
