"""One experiment's outcome counts keyed by (variant, metric), and their record form (pure).

The sidecar's publisher merges what its key already holds with what it gathered since it
started; configsvc merges the fleet's keys. Both go through these helpers so that a record
written before ``m2`` existed is read the same way everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from holdfast.experiments.stats import Counts
from holdfast.keyspace.outcomes import OutcomeCounts, OutcomeReport

SeriesKey = tuple[str, str]  # (variant, metric)
Series = dict[SeriesKey, Counts]


def counts_of(item: OutcomeCounts) -> Counts:
    if item.m2 is None:
        return Counts.from_sums(item.n, item.total, item.total_sq)
    return Counts(item.n, item.total, item.m2) if item.n else Counts()


def series_of(report: OutcomeReport) -> Series:
    out: Series = {}
    for item in report.counts:
        key = (item.variant, item.metric)
        out[key] = out[key].merged(counts_of(item)) if key in out else counts_of(item)
    return out


def combine(*parts: Mapping[SeriesKey, Counts]) -> Series:
    out: Series = {}
    for part in parts:
        for key, counts in part.items():
            out[key] = out[key].merged(counts) if key in out else counts
    return out


def subtract(whole: Mapping[SeriesKey, Counts], part: Mapping[SeriesKey, Counts]) -> Series:
    """``whole`` less ``part`` (which it contains), series by series; empty series dropped."""
    out: Series = {}
    for key, counts in whole.items():
        left = counts.without(part[key]) if key in part else counts
        if left.n:
            out[key] = left
    return out


def to_records(experiment: str, series: Iterable[tuple[SeriesKey, Counts]]) -> list[OutcomeCounts]:
    return [
        OutcomeCounts(
            experiment=experiment,
            variant=variant,
            metric=metric,
            n=c.n,
            total=c.total,
            total_sq=c.total_sq,
            m2=c.m2,
        )
        for (variant, metric), c in sorted(series)
        if c.n
    ]
