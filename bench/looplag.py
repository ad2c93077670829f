"""The sidecar's event-loop lag, read from its ``/metrics`` around the rounds that load it.

The sidecar exports ``holdfast_event_loop_lag_seconds``, a Prometheus histogram of how late its
loop ran a callback it had scheduled. The harness scrapes it before and after each of the
sidecar's rounds (outside the CPU windows) and keeps the difference, so the percentiles describe
the loop under that phase's load only, not while the other paths had their turn. A sidecar built
before the metric existed has no such histogram: ``read`` gives None and the report says the
lag was not measured.
"""

from __future__ import annotations

import asyncio
import math
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Final

from prometheus_client.parser import text_string_to_metric_families

LAG_METRIC: Final = "holdfast_event_loop_lag_seconds"


@dataclass(frozen=True, slots=True)
class Histogram:
    """Cumulative bucket counts by upper bound (seconds, ascending, ``inf`` last), the number
    of observations and their sum: one Prometheus histogram, its label sets added up."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    count: float
    total: float

    def __sub__(self, earlier: Histogram) -> Histogram:
        if earlier.bounds != self.bounds:
            raise ValueError("histograms with different buckets")
        return Histogram(
            self.bounds,
            tuple(a - b for a, b in zip(self.cumulative, earlier.cumulative, strict=True)),
            self.count - earlier.count,
            self.total - earlier.total,
        )

    def __add__(self, other: Histogram) -> Histogram:
        if other.bounds != self.bounds:
            raise ValueError("histograms with different buckets")
        return Histogram(
            self.bounds,
            tuple(a + b for a, b in zip(self.cumulative, other.cumulative, strict=True)),
            self.count + other.count,
            self.total + other.total,
        )

    def quantile(self, q: float) -> float:
        """Seconds, as Prometheus's ``histogram_quantile`` estimates it: linear within the
        bucket where the rank falls; the highest finite bound when it falls in ``+Inf``; NaN
        without observations."""
        if self.count <= 0:
            return math.nan
        rank = q * self.count
        lower, below = 0.0, 0.0
        for bound, cumulative in zip(self.bounds, self.cumulative, strict=True):
            if cumulative >= rank:
                if math.isinf(bound):
                    return lower
                inside = cumulative - below
                return lower + (bound - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = bound, cumulative
        return lower

    @property
    def worst_bound(self) -> float:
        """Upper bound of the highest bucket with an observation (the max lag is at most this;
        ``inf`` when one was beyond the last finite bucket)."""
        below = 0.0
        worst = math.nan
        for bound, cumulative in zip(self.bounds, self.cumulative, strict=True):
            if cumulative > below:
                worst = bound
            below = cumulative
        return worst

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count > 0 else math.nan


def parse(text: str, name: str = LAG_METRIC) -> Histogram | None:
    """The histogram ``name`` in a Prometheus text exposition, or None when it is not there."""
    buckets: dict[float, float] = {}
    count = total = 0.0
    found = False
    for family in text_string_to_metric_families(text):
        if family.name != name or family.type != "histogram":
            continue
        found = True
        for sample in family.samples:
            if sample.name == f"{name}_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            elif sample.name == f"{name}_count":
                count += sample.value
            elif sample.name == f"{name}_sum":
                total += sample.value
    if not found or not buckets:
        return None
    bounds = tuple(sorted(buckets))
    return Histogram(bounds, tuple(buckets[b] for b in bounds), count, total)


def _get(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return str(resp.read().decode())
    except (OSError, urllib.error.URLError, UnicodeDecodeError):
        return None


async def read(metrics_url: str) -> Histogram | None:
    """Scrape ``metrics_url`` (off the event loop: the load generator shares it)."""
    text = await asyncio.to_thread(_get, metrics_url)
    return None if text is None else parse(text)
