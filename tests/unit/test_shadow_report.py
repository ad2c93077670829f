"""Shadow report aggregation and verdicts: pure, no event loop."""

from __future__ import annotations

import pytest

from configsvc.traffic.shadow_report import Figures, Thresholds, aggregate, report, verdict
from holdfast.keyspace import HealthSnapshot, Shadow, ShadowStats

AGENT = "support"
SHADOW = Shadow(release="r3", percent=10, since=100.0)
LIMITS = Thresholds(min_samples=10, min_similarity=0.8, min_agreement=0.9)


def stats(
    primary: str = "r1", epoch: float = 100.0, shadow: str = "r3", **kw: float
) -> ShadowStats:
    return ShadowStats(primary=primary, shadow=shadow, epoch=epoch, **kw)  # type: ignore[arg-type]


def snap(sidecar: str, *s: ShadowStats, agent: str = AGENT) -> HealthSnapshot:
    return HealthSnapshot(
        sidecar_id=sidecar, agent=agent, at=1.0, started_at=1.0, config_revision=1, shadow=s
    )


def test_aggregate_keeps_only_this_agent_release_and_epoch() -> None:
    snaps = [
        snap("a", stats(samples=4, similarity_sum=3.6, similarity_min=0.8, tool_agree=4),
             stats("r2", samples=2, similarity_sum=2.0, tool_agree=1)),
        snap("b", stats(samples=4, similarity_sum=2.0, similarity_min=0.3, tool_agree=3),
             stats(epoch=99.0, samples=100), stats(shadow="r4", samples=100)),
        snap("c", stats(samples=100), agent="other"),
        snap("d"),
    ]  # fmt: skip
    agg = aggregate(snaps, AGENT, SHADOW)
    assert (agg.total.samples, agg.sidecars) == (10, 2)
    assert agg.total.mean_similarity == pytest.approx(7.6 / 10)
    assert agg.total.min_similarity == pytest.approx(0.3)
    assert agg.total.agreement == pytest.approx(0.8)
    assert sorted(agg.by_primary) == ["r1", "r2"]
    assert agg.by_primary["r1"].samples == 8


def test_figures_deltas_and_empty() -> None:
    f = Figures(
        stats(samples=4, token_samples=4, primary_completion_tokens=40, shadow_completion_tokens=30,
              primary_latency_ms_sum=400.0, shadow_latency_ms_sum=600.0, shadow_errors=2,
              skipped=5)
    ).to_json()  # fmt: skip
    assert (f["mean_completion_token_delta"], f["mean_latency_delta_ms"]) == (-2.5, 50.0)
    assert (f["shadow_errors"], f["skipped"]) == (2, 5)
    # usage missing on some samples (streams without include_usage): tokens average over the rest
    g = Figures(stats(samples=4, token_samples=2, primary_completion_tokens=20,
                      shadow_completion_tokens=30)).to_json()  # fmt: skip
    assert (g["token_samples"], g["mean_completion_token_delta"]) == (2, 5.0)
    assert Figures(stats(samples=3)).to_json()["mean_completion_token_delta"] is None
    empty = Figures(stats()).to_json()
    assert empty["mean_similarity"] is None and empty["min_similarity"] is None
    assert empty["tool_agreement"] is None and empty["samples"] == 0


@pytest.mark.parametrize(
    ("samples", "sim", "agree", "expected", "why"),
    [
        (9, 9.0, 9, "insufficient_data", "samples 9 < 10"),
        (10, 9.0, 10, "ready", None),
        (10, 8.0, 9, "ready", None),  # exactly at the thresholds passes
        (10, 7.9, 10, "not_ready", "mean similarity 0.790 < 0.8"),
        (10, 9.0, 8, "not_ready", "tool agreement 0.800 < 0.9"),
    ],
)
def test_verdicts(samples: int, sim: float, agree: int, expected: str, why: str | None) -> None:
    outcome, reasons = verdict(
        Figures(stats(samples=samples, similarity_sum=sim, tool_agree=agree)), LIMITS
    )
    assert outcome == expected
    assert reasons == ([why] if why else [])


def test_both_thresholds_failing_are_both_named() -> None:
    _, reasons = verdict(Figures(stats(samples=10, similarity_sum=1.0, tool_agree=1)), LIMITS)
    assert len(reasons) == 2


def test_report_body() -> None:
    body = report([snap("a", stats(samples=10, similarity_sum=10.0, tool_agree=10))],
                  AGENT, SHADOW, LIMITS)  # fmt: skip
    assert body["verdict"] == "ready" and body["sidecars"] == 1
    assert body["thresholds"] == {"min_samples": 10, "min_similarity": 0.8, "min_agreement": 0.9}
    assert body["shadow"]["since"] == 100.0 and body["total"]["samples"] == 10
