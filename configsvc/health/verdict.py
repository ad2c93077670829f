"""Pure evaluation of a rollout's health policy: canary against stable, overall and per category.

Each check is pass, fail or inconclusive; too few samples on either side is inconclusive, never a
pass. The evaluation fails when any conclusive check fails (a category that regresses fails
the rollout even when the average improves); it passes only when every overall check passed;
otherwise it is inconclusive. Category checks with too few samples are reported and ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from configsvc.health.sums import Key, by_release
from holdfast.keyspace import ShadowStats
from holdfast.keyspace.policy import HealthPolicy
from holdfast.keyspace.signals import ReleaseSignals
from holdfast.signals.summary import window_figures

Verdict = Literal["pass", "fail", "inconclusive"]
OVERALL: Final = "overall"


@dataclass(frozen=True, slots=True)
class Check:
    gate: str
    scope: str  # "overall" or a category
    verdict: Verdict
    canary: float | None
    stable: float | None
    limit: float
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "gate": self.gate,
            "scope": self.scope,
            "verdict": self.verdict,
            "canary": self.canary,
            "stable": self.stable,
            "limit": self.limit,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Evaluation:
    verdict: Verdict
    checks: tuple[Check, ...]

    @property
    def failing(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.verdict == "fail")

    def summary(self) -> str:
        if self.verdict == "fail":
            return "; ".join(c.detail for c in self.failing)
        waiting = [c for c in self.checks if c.verdict == "inconclusive" and c.scope == OVERALL]
        if waiting:
            return "; ".join(c.detail for c in waiting)
        return "all checks pass"


def _compare(
    gate: str, scope: str, canary: Mapping[str, Any], stable: Mapping[str, Any], limit: float
) -> Check:
    field = {
        "max_error_rate_delta": "error_rate",
        "max_p95_ratio": "p95_ms",
        "max_tokens_change": "tokens_per_answer",
        "max_cost_ratio": "cost_per_request",
        "max_violation_rate_delta": "violation_rate",
    }[gate]
    c, s = canary[field], stable[field]
    label = f"{gate} [{scope}]"
    if c is None or s is None:
        return Check(gate, scope, "inconclusive", c, s, limit, f"{label}: no data")
    if gate in ("max_error_rate_delta", "max_violation_rate_delta"):
        measured, bad = c - s, c - s > limit
        shown = f"{field} canary {c:.3f} vs stable {s:.3f} (delta {measured:+.3f} > {limit:g})"
    elif gate == "max_tokens_change":
        if s == 0:
            return Check(gate, scope, "inconclusive", c, s, limit, f"{label}: stable has 0")
        measured = abs(c / s - 1)
        bad = measured > limit
        shown = f"{field} canary {c:.1f} vs stable {s:.1f} (change {measured:.0%} > {limit:.0%})"
    else:  # ratios: p95, cost
        if s == 0:
            return Check(gate, scope, "inconclusive", c, s, limit, f"{label}: stable has 0")
        measured, bad = c / s, c / s > limit
        shown = f"{field} canary {c:.4g} vs stable {s:.4g} (x{measured:.2f} > x{limit:g})"
    verdict: Verdict = "fail" if bad else "pass"
    return Check(gate, scope, verdict, c, s, limit, f"{label}: {shown}" if bad else label)


def _sizes(gate: str, canary: Mapping[str, Any], stable: Mapping[str, Any]) -> tuple[int, int]:
    field = "answers" if gate in ("max_tokens_change", "max_cost_ratio") else "requests"
    return int(canary[field]), int(stable[field])


def evaluate(
    policy: HealthPolicy,
    signals: Mapping[Key, ReleaseSignals],
    *,
    canary: str,
    stable: str,
    shadow: Sequence[ShadowStats] = (),
) -> Evaluation:
    """One evaluation of ``policy`` over one window's fleet-wide signals."""
    scopes: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    whole = by_release(signals)
    scopes[OVERALL] = (window_figures(whole.get(canary)), window_figures(whole.get(stable)))
    categories = sorted({cat for (rel, cat) in signals if rel == canary})
    for cat in categories:
        scopes[cat] = (
            window_figures(signals.get((canary, cat))),
            window_figures(signals.get((stable, cat))),
        )
    checks: list[Check] = []
    for gate, limit in policy.thresholds().items():
        if gate == "min_shadow_similarity":
            checks.append(_shadow_check(policy, shadow, canary, limit))
            continue
        for scope, (c, s) in scopes.items():
            nc, ns = _sizes(gate, c, s)
            if min(nc, ns) < policy.min_samples:
                detail = (
                    f"{gate} [{scope}]: {nc} canary / {ns} stable samples, "
                    f"need {policy.min_samples} each"
                )
                checks.append(Check(gate, scope, "inconclusive", None, None, limit, detail))
            else:
                checks.append(_compare(gate, scope, c, s, limit))
    if any(c.verdict == "fail" for c in checks):
        verdict: Verdict = "fail"
    elif all(c.verdict == "pass" for c in checks if c.scope == OVERALL):
        verdict = "pass"
    else:
        verdict = "inconclusive"
    return Evaluation(verdict, tuple(checks))


def _shadow_check(
    policy: HealthPolicy, shadow: Sequence[ShadowStats], canary: str, limit: float
) -> Check:
    samples = sum(s.samples for s in shadow if s.shadow == canary)
    total = sum(s.similarity_sum for s in shadow if s.shadow == canary)
    gate = "min_shadow_similarity"
    if samples < policy.min_samples:
        detail = f"{gate} [overall]: {samples} shadow samples, need {policy.min_samples}"
        return Check(gate, OVERALL, "inconclusive", None, None, limit, detail)
    mean = total / samples
    if mean < limit:
        detail = f"{gate} [overall]: similarity {mean:.3f} < {limit:g} over {samples} samples"
        return Check(gate, OVERALL, "fail", mean, None, limit, detail)
    return Check(gate, OVERALL, "pass", mean, None, limit, f"{gate} [overall]")
