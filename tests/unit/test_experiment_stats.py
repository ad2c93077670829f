"""Experiment statistics checked against SciPy on the same data (SciPy in the test only)."""

from __future__ import annotations

import math
import random
import statistics

import pytest
from scipy import stats as sp  # type: ignore[import-untyped]

from configsvc.experiments.ops import merge_reports
from holdfast.experiments.series import counts_of, to_records
from holdfast.experiments.stats import (
    Counts,
    report,
    t_interval,
    t_quantile,
    two_proportion_z,
    welch_t,
    wilson,
)
from holdfast.keyspace import RecordError
from holdfast.keyspace.experiment import RouteExperiment, Variant
from holdfast.keyspace.outcomes import OutcomeCounts, OutcomeReport
from sidecar.routing.experiments import experiment_variant


def _counts(values: list[float]) -> Counts:
    c = Counts()
    for v in values:
        c = c.add(v)
    return c


def test_welch_t_matches_scipy() -> None:
    rng = random.Random(7)
    a = [rng.gauss(10, 2) for _ in range(40)]
    b = [rng.gauss(11, 5) for _ in range(55)]
    t, df, p = welch_t(_counts(a), _counts(b))
    ref = sp.ttest_ind(b, a, equal_var=False)
    assert t == pytest.approx(ref.statistic, rel=1e-9)
    assert p == pytest.approx(ref.pvalue, rel=1e-7)
    assert df == pytest.approx(ref.df, rel=1e-9)


def test_t_quantile_and_interval_match_scipy() -> None:
    for df in (1, 3, 9.5, 30, 400):
        assert t_quantile(0.975, df) == pytest.approx(sp.t.ppf(0.975, df), rel=1e-7)
    values = [1.0, 2.5, 3.0, 4.5, 2.0, 3.5, 2.2]
    low, high = t_interval(_counts(values))
    ref = sp.t.interval(0.95, len(values) - 1, loc=sp.tmean(values), scale=sp.sem(values))
    assert (low, high) == pytest.approx(ref, rel=1e-7)


def test_two_proportion_z_matches_scipy_chi2() -> None:
    a, b = Counts.from_sums(500, 120, 120), Counts.from_sums(480, 150, 150)
    z, p = two_proportion_z(a, b)
    table = [[120, 380], [150, 330]]
    chi2, p_ref, _dof, _exp = sp.chi2_contingency(table, correction=False)
    assert z * z == pytest.approx(chi2, rel=1e-9)
    assert p == pytest.approx(p_ref, rel=1e-9)
    assert z > 0  # b's rate is higher


def test_wilson_matches_scipy() -> None:
    low, high = wilson(37, 120)
    ref = sp.binomtest(37, 120).proportion_ci(0.95, method="wilson")
    assert (low, high) == pytest.approx((ref.low, ref.high), rel=1e-9)


def test_report_states() -> None:
    few = report(["a", "b"], {"a": _counts([1, 1, 0, 0, 0]), "b": _counts([1, 0, 0])}, "rate")
    assert few["state"] == "not_enough_data"
    assert few["comparisons"][0]["p_value"] is None
    many = {"a": Counts.from_sums(200, 40, 40), "b": Counts.from_sums(200, 70, 70)}
    ready = report(["a", "b"], many, "rate")
    assert ready["state"] == "ready" and ready["comparisons"][0]["significant"]
    assert ready["variants"][0]["mean"] == pytest.approx(0.2)
    empty = report(["a", "b"], {}, "mean")
    assert empty["variants"][0]["n"] == 0 and empty["state"] == "not_enough_data"


def test_fleet_merge_equals_one_sidecar() -> None:
    rng = random.Random(3)
    values = {"a": [rng.random() for _ in range(90)], "b": [rng.random() + 0.1 for _ in range(90)]}
    snapshots = []
    for i in range(3):
        parts = tuple(
            OutcomeCounts(
                experiment="e1",
                variant=label,
                metric="score",
                n=30,
                total=sum(vs[i * 30 : (i + 1) * 30]),
                total_sq=sum(v * v for v in vs[i * 30 : (i + 1) * 30]),
            )
            for label, vs in values.items()
        )
        snapshots.append(
            OutcomeReport(experiment="e1", sidecar_id=f"s{i}", at=1, counts=parts).encode()
        )
    snapshots.append(b"garbage")
    merged, sidecars, unreadable = merge_reports(snapshots, "e1", "score")
    assert (sidecars, unreadable) == (3, 1)
    # under the keys they were read from: a report under another sidecar's key is refused
    ids = ["s0", "s1", "s9", "s3"]
    _m, sidecars, unreadable = merge_reports(snapshots, "e1", "score", sidecar_ids=ids)
    assert (sidecars, unreadable) == (2, 2)
    whole = _counts(values["a"])
    assert merged["a"].n == 90 and math.isclose(merged["a"].total, whole.total)
    t, _df, p = welch_t(merged["a"], merged["b"])
    ref = sp.ttest_ind(values["b"], values["a"], equal_var=False)
    assert t == pytest.approx(ref.statistic, rel=1e-9) and p == pytest.approx(ref.pvalue, rel=1e-7)


def test_variant_assignment_is_sticky_and_follows_the_split() -> None:
    exp = RouteExperiment(
        name="e1",
        metric="m",
        metric_type="rate",
        variants=(Variant("a", "r1", 30.0), Variant("b", "r2", 70.0)),
        started_at=0,
    )
    picks = [experiment_variant(exp, "bot", f"s{i}").label for i in range(4000)]
    assert picks == [experiment_variant(exp, "bot", f"s{i}").label for i in range(4000)]
    assert 0.27 < picks.count("a") / 4000 < 0.33


def test_outcome_reports_round_trip_and_refuse_foreign_counts() -> None:
    mine = OutcomeCounts(experiment="e1", variant="a", metric="m", n=3, total=2.0, total_sq=2.0)
    report = OutcomeReport(experiment="e1", sidecar_id="bot.host-1", at=5.0, counts=(mine,))
    assert OutcomeReport.decode(report.encode()) == report
    other = OutcomeCounts(experiment="e2", variant="a", metric="m", n=1, total=1.0, total_sq=1.0)
    with pytest.raises(RecordError):
        OutcomeReport(experiment="e1", sidecar_id="bot.host-1", at=5.0, counts=(other,))
    with pytest.raises(RecordError):
        OutcomeReport(experiment="e1", sidecar_id="bad/id", at=5.0)


def test_variance_keeps_precision_with_large_values() -> None:
    # sum of squares minus sum**2 / n cancels catastrophically here; Welford / Chan do not
    rng = random.Random(11)
    values = [1e9 + rng.gauss(0, 1) for _ in range(500)]
    ref = statistics.variance(values)
    whole = _counts(values)
    assert whole.variance == pytest.approx(ref, rel=1e-6)
    naive = Counts.from_sums(len(values), sum(values), sum(v * v for v in values))
    assert naive.variance != pytest.approx(ref, rel=1e-2)  # the old formula really loses it
    parts = [_counts(values[i : i + 70]) for i in range(0, len(values), 70)]
    merged = Counts()
    for part in parts:
        merged = merged.merged(part)
    assert merged.n == 500 and merged.variance == pytest.approx(ref, rel=1e-6)
    t, _df, p = welch_t(whole, _counts([v + 0.3 for v in values]))
    ref_t = sp.ttest_ind([v + 0.3 for v in values], values, equal_var=False)
    # the means themselves carry float64's rounding at 1e9 (~1e-7 absolute): looser here
    assert t == pytest.approx(ref_t.statistic, rel=1e-5)
    assert p == pytest.approx(ref_t.pvalue, rel=1e-4)


def test_remove_and_without_undo_add_and_merge() -> None:
    rng = random.Random(5)
    values = [rng.uniform(-50, 50) for _ in range(60)]
    whole = _counts(values)
    less = whole.remove(values[7])
    rest = values[:7] + values[8:]
    assert less.n == 59 and less.total == pytest.approx(sum(rest))
    assert less.variance == pytest.approx(statistics.variance(rest), rel=1e-9)
    head, tail = _counts(values[:25]), _counts(values[25:])
    back = whole.without(head)
    assert back.n == tail.n and back.mean == pytest.approx(tail.mean, rel=1e-9)
    assert back.variance == pytest.approx(tail.variance, rel=1e-9)
    assert whole.without(whole) == Counts() and _counts([3.0]).remove(3.0) == Counts()


def test_not_enough_data_says_why() -> None:
    rate = report(["a", "b"], {"a": _counts([1.0] * 40), "b": _counts([1.0, 0.0] * 20)}, "rate")
    assert rate["state"] == "not_enough_data"
    reason = rate["comparisons"][0]["reason"]
    assert reason == "a: 40 successes and 0 failures, needs at least 5 of each"
    assert rate["variants"][1]["enough_data"] and not rate["variants"][0]["enough_data"]
    small = report(["a", "b"], {"a": _counts([1.0, 2.0] * 20), "b": _counts([1.0] * 4)}, "mean")
    assert small["comparisons"][0]["reason"] == "b: n = 4, needs n >= 30"


def test_old_outcome_records_without_m2_still_read() -> None:
    values = [2.0, 4.0, 9.0, 1.0]
    old = OutcomeCounts(experiment="e1", variant="a", metric="m", n=4, total=16.0, total_sq=102.0)
    assert "m2" not in old.to_map()
    assert counts_of(OutcomeCounts.from_map(old.to_map())).variance == pytest.approx(
        statistics.variance(values)
    )
    new = to_records("e1", [(("a", "m"), _counts(values))])[0]
    decoded = OutcomeCounts.from_map(new.to_map())
    assert decoded.m2 == pytest.approx(_counts(values).m2) and decoded.total_sq == 102.0
    # a newer writer's extra fields are ignored, a negative spread refused
    assert OutcomeCounts.from_map({**new.to_map(), "future": 1}) == decoded
    with pytest.raises(RecordError):
        OutcomeCounts.from_map({**new.to_map(), "m2": -1.0})
