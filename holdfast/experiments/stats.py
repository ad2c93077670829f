"""Experiment statistics: mergeable counts, confidence intervals and significance tests.

Counts are (n, sum, M2) per (experiment, variant, metric), M2 being the sum of squared
deviations from the mean; for a rate metric every value is 0 or 1, so ``sum`` is the number of
successes. Observations are added (and removed, when the agent replaces a session's outcome)
with Welford's update and counts are merged with Chan et al.'s parallel formula, so the variance
keeps its precision where ``sum of squares - sum**2 / n`` would cancel catastrophically (large
values with a small spread). Sidecars publish their counts and the report merges the fleet's.

* rate: Wilson score interval; pooled two-proportion z-test, two-sided.
* mean: Student-t interval; Welch's unequal-variance t-test with Welch-Satterthwaite degrees of
  freedom, two-sided. The t distribution comes from the regularized incomplete beta function
  (continued fraction, Lentz's method); values agree with SciPy to ~1e-10 (see the tests).

Each variant is compared with the first (the control). Below ``min_samples`` observations in a
variant (or, for rates, without at least ``MIN_OUTCOMES`` successes and failures) the report
says "not enough data", and why, instead of a p-value that would mean nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from statistics import NormalDist

DEFAULT_MIN_SAMPLES: Final = 30
MIN_OUTCOMES: Final = 5
CONFIDENCE: Final = 0.95
ALPHA: Final = 0.05


@cache
def _normal() -> NormalDist:
    # Imported on first use: only configsvc's analyses need it, and a sidecar (which counts
    # outcomes with this module) would otherwise carry the statistics module (~0.2 MB).
    from statistics import NormalDist

    return NormalDist()


@dataclass(frozen=True, slots=True)
class Counts:
    n: int = 0
    total: float = 0.0
    m2: float = 0.0  # sum of squared deviations from the mean

    @classmethod
    def from_sums(cls, n: int, total: float, total_sq: float) -> Counts:
        """From (n, sum, sum of squares): what records written before M2 was kept carry."""
        if n <= 0:
            return cls()
        return cls(n, total, max(0.0, total_sq - total * total / n))

    @property
    def total_sq(self) -> float:
        """Sum of squares, for readers of the older record field (lossy for large values)."""
        return self.m2 + (self.total * self.total / self.n if self.n else 0.0)

    def add(self, value: float) -> Counts:
        n = self.n + 1
        mean = self.mean if self.n else 0.0
        new_mean = mean + (value - mean) / n
        return Counts(n, self.total + value, self.m2 + (value - mean) * (value - new_mean))

    def remove(self, value: float) -> Counts:
        """The counts without one earlier observation ``value`` (Welford's update, reversed)."""
        if self.n <= 1:
            return Counts()
        n = self.n - 1
        total = self.total - value
        new_mean = total / n
        return Counts(n, total, max(0.0, self.m2 - (value - self.mean) * (value - new_mean)))

    def merged(self, other: Counts) -> Counts:
        if not other.n:
            return self
        if not self.n:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        m2 = self.m2 + other.m2 + delta * delta * self.n * other.n / n
        return Counts(n, self.total + other.total, m2)

    def without(self, part: Counts) -> Counts:
        """``self`` less ``part``, which must be a sub-multiset of it (``merged`` reversed)."""
        n = self.n - part.n
        if n <= 0 or not part.n:
            return Counts() if n <= 0 else self
        total = self.total - part.total
        delta = total / n - part.mean
        m2 = self.m2 - part.m2 - delta * delta * part.n * n / self.n
        return Counts(n, total, max(0.0, m2))

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def variance(self) -> float:
        """Sample variance (n - 1 in the denominator)."""
        if self.n < 2:
            return math.nan
        return max(0.0, self.m2 / (self.n - 1))


def merge(parts: Iterable[Mapping[str, Counts]]) -> dict[str, Counts]:
    out: dict[str, Counts] = {}
    for part in parts:
        for key, counts in part.items():
            out[key] = out[key].merged(counts) if key in out else counts
    return out


# -- distributions ----------------------------------------------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    ln = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
    front = math.exp(ln + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_sf2(t: float, df: float) -> float:
    """Two-sided tail probability P(|T| > |t|) of Student's t with ``df`` degrees of freedom."""
    if math.isinf(df):
        return 2.0 * (1.0 - _normal().cdf(abs(t)))
    return betainc(df / 2.0, 0.5, df / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """The t value with P(T <= t) = p, for p in (0.5, 1): bisection on the tail."""
    lo, hi = 0.0, 1e6
    target = 2.0 * (1.0 - p)
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_sf2(mid, df) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


# -- intervals and tests ----------------------------------------------------------------------


def wilson(successes: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    z = _normal().inv_cdf(0.5 + confidence / 2.0)
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def t_interval(c: Counts, confidence: float = CONFIDENCE) -> tuple[float, float]:
    half = t_quantile(0.5 + confidence / 2.0, c.n - 1) * math.sqrt(c.variance / c.n)
    return c.mean - half, c.mean + half


def two_proportion_z(a: Counts, b: Counts) -> tuple[float, float]:
    """(z, two-sided p) of H0: both rates are equal, with the pooled proportion."""
    pooled = (a.total + b.total) / (a.n + b.n)
    se = math.sqrt(pooled * (1 - pooled) * (1 / a.n + 1 / b.n))
    if se == 0:
        return 0.0, 1.0
    z = (b.mean - a.mean) / se
    return z, 2.0 * (1.0 - _normal().cdf(abs(z)))


def welch_t(a: Counts, b: Counts) -> tuple[float, float, float]:
    """(t, degrees of freedom, two-sided p) of H0: both means are equal."""
    va, vb = a.variance / a.n, b.variance / b.n
    se2 = va + vb
    if se2 == 0:
        return 0.0, float(a.n + b.n - 2), 1.0
    t = (b.mean - a.mean) / math.sqrt(se2)
    df = se2 * se2 / (va * va / (a.n - 1) + vb * vb / (b.n - 1))
    return t, df, t_sf2(t, df)


def shortfall(c: Counts, metric_type: str, min_samples: int) -> str:
    """Why a variant's counts cannot be tested yet; empty when they can."""
    needed = max(min_samples, 2)
    if c.n < needed:
        return f"n = {c.n}, needs n >= {needed}"
    if metric_type == "rate":
        successes = round(c.total)
        failures = c.n - successes
        if min(successes, failures) < MIN_OUTCOMES:
            return (
                f"{successes} successes and {failures} failures, needs at least "
                f"{MIN_OUTCOMES} of each"
            )
    return ""


def report(
    variants: Sequence[str],
    counts: Mapping[str, Counts],
    metric_type: str,
    *,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> dict[str, Any]:
    """Per variant n, mean and 95 % interval, and each variant's test against the first."""
    rows: list[dict[str, Any]] = []
    for label in variants:
        c = counts.get(label, Counts())
        row: dict[str, Any] = {"variant": label, "n": c.n, "mean": None, "ci95": None}
        if c.n:
            row["mean"] = c.mean
        if c.n >= 2:
            low, high = wilson(c.total, c.n) if metric_type == "rate" else t_interval(c)
            row["ci95"] = [low, high]
        why = shortfall(c, metric_type, min_samples)
        row["enough_data"] = not why
        row["not_enough_data"] = why or None
        rows.append(row)
    control = counts.get(variants[0], Counts())
    comparisons: list[dict[str, Any]] = []
    for label in variants[1:]:
        other = counts.get(label, Counts())
        item: dict[str, Any] = {"control": variants[0], "variant": label}
        reasons = [
            f"{name}: {why}"
            for name, c in ((variants[0], control), (label, other))
            if (why := shortfall(c, metric_type, min_samples))
        ]
        if reasons:
            item |= {
                "state": "not_enough_data",
                "test": None,
                "p_value": None,
                "reason": "; ".join(reasons),
            }
        elif metric_type == "rate":
            z, p = two_proportion_z(control, other)
            item |= {"state": "tested", "test": "two_proportion_z", "statistic": z, "p_value": p}
        else:
            t, df, p = welch_t(control, other)
            item |= {"state": "tested", "test": "welch_t", "statistic": t, "df": df, "p_value": p}
        if item["p_value"] is not None:
            item["difference"] = other.mean - control.mean
            item["significant"] = item["p_value"] < ALPHA
        comparisons.append(item)
    tested = [c for c in comparisons if c["state"] == "tested"]
    state = "not_enough_data" if len(tested) < len(comparisons) else "ready"
    return {
        "state": state,
        "metric_type": metric_type,
        "min_samples": min_samples,
        "alpha": ALPHA,
        "variants": rows,
        "comparisons": comparisons,
    }
