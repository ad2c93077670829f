"""The shadow report: pure aggregation of sidecars' ShadowStats and the readiness verdict.

Sidecars publish cumulative counters per (primary, shadow, epoch); summing them across
sidecars is exact. Only the current shadow's release AND epoch count: an earlier shadow of the
same release (other thresholds, other share, maybe another model behind it) is never mixed in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from holdfast.keyspace import HealthSnapshot, Shadow, ShadowStats

Verdict = Literal["insufficient_data", "not_ready", "ready"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Thresholds:
    min_samples: int
    min_similarity: float
    min_agreement: float


@dataclass(frozen=True, slots=True)
class Figures:
    """The numbers an operator reads off one merged ShadowStats."""

    stats: ShadowStats

    @property
    def samples(self) -> int:
        return self.stats.samples

    def _mean(self, total: float) -> float | None:
        return total / self.samples if self.samples else None

    @property
    def mean_similarity(self) -> float | None:
        return self._mean(self.stats.similarity_sum)

    @property
    def min_similarity(self) -> float | None:
        return self.stats.similarity_min if self.samples else None

    @property
    def agreement(self) -> float | None:
        return self._mean(self.stats.tool_agree)

    def to_json(self) -> dict[str, Any]:
        s = self.stats
        return {
            "samples": s.samples,
            "mean_similarity": self.mean_similarity,
            "min_similarity": self.min_similarity,
            "tool_agreement": self.agreement,
            "token_samples": s.token_samples,
            "mean_completion_token_delta": (
                (s.shadow_completion_tokens - s.primary_completion_tokens) / s.token_samples
                if s.token_samples
                else None
            ),
            "mean_latency_delta_ms": self._mean(s.shadow_latency_ms_sum - s.primary_latency_ms_sum),
            "shadow_errors": s.shadow_errors,
            "skipped": s.skipped,
        }


@dataclass(frozen=True, slots=True)
class Aggregate:
    total: Figures
    by_primary: dict[str, Figures]
    sidecars: int


def aggregate(snapshots: Iterable[HealthSnapshot], agent: str, shadow: Shadow) -> Aggregate:
    """Sum the stats of ``agent``'s sidecars for ``shadow``'s release and epoch."""
    empty = ShadowStats(primary="all", shadow=shadow.release, epoch=shadow.since)
    total = empty
    by_primary: dict[str, ShadowStats] = {}
    reporting: set[str] = set()
    for snap in snapshots:
        if snap.agent != agent:
            continue
        for stats in snap.shadow:
            if stats.shadow != shadow.release or stats.epoch != shadow.since:
                continue
            reporting.add(snap.sidecar_id)
            total = total.merged(stats)
            seen = by_primary.get(stats.primary)
            by_primary[stats.primary] = stats if seen is None else seen.merged(stats)
    return Aggregate(
        total=Figures(total),
        by_primary={p: Figures(s) for p, s in sorted(by_primary.items())},
        sidecars=len(reporting),
    )


def verdict(figures: Figures, limits: Thresholds) -> tuple[Verdict, list[str]]:
    """``ready`` only with enough samples and every threshold met; otherwise which one failed."""
    if figures.samples < limits.min_samples:
        return "insufficient_data", [f"samples {figures.samples} < {limits.min_samples}"]
    failed: list[str] = []
    similarity, agreement = figures.mean_similarity, figures.agreement
    if similarity is not None and similarity < limits.min_similarity:
        failed.append(f"mean similarity {similarity:.3f} < {limits.min_similarity:g}")
    if agreement is not None and agreement < limits.min_agreement:
        failed.append(f"tool agreement {agreement:.3f} < {limits.min_agreement:g}")
    return ("not_ready", failed) if failed else ("ready", [])


def report(
    snapshots: Iterable[HealthSnapshot], agent: str, shadow: Shadow, limits: Thresholds
) -> dict[str, Any]:
    """The API's JSON body of ``GET /v1/agents/{agent}/shadow/report`` (minus the envelope)."""
    agg = aggregate(snapshots, agent, shadow)
    outcome, reasons = verdict(agg.total, limits)
    return {
        "shadow": shadow.to_map(),
        "thresholds": {
            "min_samples": limits.min_samples,
            "min_similarity": limits.min_similarity,
            "min_agreement": limits.min_agreement,
        },
        "total": agg.total.to_json(),
        "by_primary": {p: f.to_json() for p, f in agg.by_primary.items()},
        "sidecars": agg.sidecars,
        "verdict": outcome,
        "reasons": reasons,
    }
