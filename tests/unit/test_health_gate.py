"""configsvc-side health: windows over cumulative snapshots, policy verdicts, the gate, output."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from configsvc.cli.render.health import checks, status
from configsvc.errors import InvalidRequest
from configsvc.health.gate import PolicyGate
from configsvc.health.sums import by_release
from configsvc.health.verdict import evaluate
from configsvc.health.windows import FleetWindows
from configsvc.rollouts.policy import parse_policy
from holdfast.keyspace import HealthSnapshot, RecordError, Rollout, Route
from holdfast.keyspace.policy import HealthPolicy
from holdfast.keyspace.signals import ReleaseSignals
from holdfast.signals.summary import window_figures as view


def sig(
    release: str, n: int, errors: int = 0, category: str = "default", tokens: int = 0, slow: int = 0
) -> ReleaseSignals:
    """n requests (``errors`` of them upstream 5xx, ``slow`` of them in the 2.5-5 s bucket)."""
    latency = [0] * 12
    latency[3] = n - slow
    latency[7] = slow
    return ReleaseSignals(
        release=release,
        category=category,
        counts={
            "requests": n,
            "error_upstream_5xx": errors,
            "usage_requests": n - errors,
            "tokens_out": tokens * (n - errors),
        },
        hists={"latency_ms": tuple(latency)},
    )


def snap(sidecar: str, at: float, *signals: ReleaseSignals, started: float = 0.0) -> HealthSnapshot:
    return HealthSnapshot(
        sidecar_id=sidecar,
        agent="support",
        at=at,
        started_at=started,
        config_revision=1,
        signals=signals,
    )


def requests(signals: dict[Any, ReleaseSignals], release: str) -> int:
    return by_release(signals)[release].count("requests") if release in by_release(signals) else 0


def test_windows_are_differences_of_cumulative_snapshots_across_sidecars() -> None:
    w = FleetWindows(min_spacing_s=0.0)
    for t in range(0, 301, 10):  # 1 request/s on each of two sidecars, 300 s long
        w.observe(snap("a", 1000.0 + t, sig("r1", t)))
        w.observe(snap("b", 1000.0 + t, sig("r1", 2 * t)))
    now = 1300.0
    assert requests(w.window("support", 60, now), "r1") == 60 + 120
    assert requests(w.window("support", 300, now), "r1") == 300 + 600
    assert requests(w.since_start("support"), "r1") == 900
    assert w.window("other-agent", 60, now) == {}


def test_a_restarted_sidecar_opens_a_new_incarnation_and_loses_nothing() -> None:
    w = FleetWindows(min_spacing_s=0.0)
    w.observe(snap("a", 100.0, sig("r1", 50), started=0.0))
    w.observe(snap("a", 110.0, sig("r1", 80), started=0.0))
    # restart: counters from zero, new started_at
    w.observe(snap("a", 120.0, sig("r1", 5), started=115.0))
    assert requests(w.since_start("support"), "r1") == 85
    assert requests(w.window("support", 15, 120.0), "r1") == 5 + (80 - 50)
    # no sample before the window: the whole count stands in
    assert requests(w.window("support", 60, 120.0), "r1") == 85
    # same started_at but a counter went down: also a new incarnation
    w.observe(snap("a", 125.0, sig("r1", 1), started=115.0))
    assert requests(w.since_start("support"), "r1") == 86
    # a sidecar whose key expired keeps its counts until they age out, then folds into totals
    w.gone("a")
    assert requests(w.since_start("support"), "r1") == 86
    w.prune(10_000.0)
    assert requests(w.since_start("support"), "r1") == 86
    assert w.window("support", 60, 10_000.0) == {}


def test_old_or_repeated_beats_are_ignored_and_history_stays_sparse() -> None:
    w = FleetWindows(min_spacing_s=5.0)
    for t in range(100):
        w.observe(snap("a", 1000.0 + t, sig("r1", t)))
    version = w.version
    w.observe(snap("a", 1050.0, sig("r1", 99)))  # older than what we have
    assert w.version == version
    inc = w._live["a"]
    assert len(inc.samples) <= 21


POLICY = HealthPolicy(
    max_error_rate_delta=0.05, max_p95_ratio=1.5, max_tokens_change=0.5, min_samples=20
)


def test_not_enough_data_is_inconclusive_never_a_pass() -> None:
    signals = {s.key: s for s in (sig("r1", 100, tokens=10), sig("r2", 5, tokens=10))}
    result = evaluate(POLICY, signals, canary="r2", stable="r1")
    assert result.verdict == "inconclusive"
    assert "5 canary / 100 stable samples, need 20" in result.summary()
    assert evaluate(POLICY, {}, canary="r2", stable="r1").verdict == "inconclusive"


def test_a_healthy_canary_passes_and_each_threshold_can_fail_it() -> None:
    good = {s.key: s for s in (sig("r1", 100, 1, tokens=10), sig("r2", 100, 2, tokens=11))}
    assert evaluate(POLICY, good, canary="r2", stable="r1").verdict == "pass"
    errors = {s.key: s for s in (sig("r1", 100, 1, tokens=10), sig("r2", 100, 30, tokens=10))}
    bad = evaluate(POLICY, errors, canary="r2", stable="r1")
    assert bad.verdict == "fail" and {c.gate for c in bad.failing} == {"max_error_rate_delta"}
    assert "delta +0.290 > 0.05" in bad.summary()
    slow = {s.key: s for s in (sig("r1", 100, tokens=10), sig("r2", 100, tokens=10, slow=50))}
    assert {c.gate for c in evaluate(POLICY, slow, canary="r2", stable="r1").failing} == {
        "max_p95_ratio"
    }


def test_a_regression_in_one_category_fails_even_when_the_average_improves() -> None:
    signals = {
        s.key: s
        for s in (
            sig("r1", 100, tokens=10, category="default"),
            sig("r1", 30, tokens=10, category="billing"),
            sig("r2", 100, tokens=14, category="default"),  # better on average
            sig("r2", 30, tokens=1, category="billing"),
            sig("r2", 3, tokens=1, category="rare"),  # too few: reported, ignored
        )
    }
    result = evaluate(POLICY, signals, canary="r2", stable="r1")
    assert result.verdict == "fail"
    assert [(c.gate, c.scope) for c in result.failing] == [("max_tokens_change", "billing")]
    assert any(c.scope == "rare" and c.verdict == "inconclusive" for c in result.checks)


class FakeFleet:
    def __init__(self, windows: FleetWindows) -> None:
        self.windows = windows
        self.now = 2000.0

    def clock(self) -> float:
        return self.now


def rollout(**policy: Any) -> Rollout:
    return Rollout(
        release="r2",
        steps=(10.0, 100.0),
        interval_s=60.0,
        started_at=1.0,
        policy=HealthPolicy(min_samples=20, fails_to_abort=2, **policy),
    )


def test_the_gate_aborts_after_n_fresh_failing_evaluations_with_evidence() -> None:
    windows = FleetWindows()
    fleet = FakeFleet(windows)
    gate = PolicyGate(fleet)  # type: ignore[arg-type]
    windows.observe(snap("a", 1990.0, sig("r1", 100), sig("r2", 100, 40)))
    first = asyncio.run(gate.judge("support", rollout(), "r1"))
    assert first.action == "hold" and "failing (1/2)" in first.reason
    # the same data judged again is not a second failure
    assert asyncio.run(gate.judge("support", rollout(), "r1")).action == "hold"
    windows.observe(snap("a", 1995.0, sig("r1", 110), sig("r2", 110, 50)))
    decision = asyncio.run(gate.judge("support", rollout(), "r1"))
    assert decision.action == "abort"
    assert decision.reason.startswith("health gate: 2 failing evaluations: max_error_rate_delta")
    assert decision.evidence["checks"][0]["verdict"] == "fail"
    report = gate.report("support", rollout(), "r1")
    assert report is not None and report["consecutive_fails"] == 2
    assert "FAIL" in checks(report)


def test_the_gate_pauses_when_inconclusive_past_its_deadline_and_passes_proceed() -> None:
    windows = FleetWindows()
    fleet = FakeFleet(windows)
    gate = PolicyGate(fleet)  # type: ignore[arg-type]
    r = rollout(inconclusive_after_s=30.0)
    assert asyncio.run(gate.judge("support", r, "r1")).action == "hold"
    fleet.now += 31
    paused = asyncio.run(gate.judge("support", r, "r1"))
    assert paused.action == "pause" and "inconclusive for 31s" in paused.reason
    windows.observe(snap("a", fleet.now - 1, sig("r1", 100), sig("r2", 100)))
    assert asyncio.run(gate.judge("support", r, "r1")).action == "proceed"
    no_policy = Rollout(release="r2", steps=(10.0,), interval_s=60.0)
    assert asyncio.run(gate.judge("support", no_policy, "r1")).action == "proceed"


def test_policy_payloads_and_records() -> None:
    p = parse_policy({"max_error_rate_delta": 0.1, "inconclusive_after": "5m", "min_samples": 9})
    assert p is not None and p.inconclusive_after_s == 300 and p.max_p95_ratio == 1.5
    assert parse_policy({"max_p95_ratio": None}).max_p95_ratio is None  # type: ignore[union-attr]
    assert parse_policy(None) is None
    assert p.migrate_on_abort is False
    moving = parse_policy({"migrate_on_abort": True})
    assert moving is not None and moving.migrate_on_abort
    assert HealthPolicy.from_map(moving.to_map()) == moving
    bads: list[Any] = [
        {"migrate_on_abort": "yes"},
        {"max_error": 1},
        {"min_samples": 1.5},
        {"max_p95_ratio": 0.5},
        [],
        {"window": "2m"},
    ]
    for bad in bads:
        with pytest.raises(InvalidRequest):
            parse_policy(bad)
    route = Route(
        agent="support",
        stable="r1",
        canary="r2",
        canary_percent=10.0,
        rollout=rollout(max_tokens_change=0.3),
    )
    assert Route.decode(route.encode()) == route
    with pytest.raises(RecordError):
        HealthPolicy.from_map({"max_error_rate_delta": "high"})


def test_view_and_status_table_render() -> None:
    v = view(sig("r2", 100, 10, tokens=5))
    assert v["error_rate"] == 0.1 and v["tokens_per_answer"] == 5 and v["p95_ms"] is not None
    assert view(None)["error_rate"] is None
    windows = {"1m": v, "5m": v, "since_start": v}
    body = {
        "agents": [
            {
                "agent": "support",
                "stable": "r1",
                "canary": "r2",
                "canary_percent": 10.0,
                "sidecars": 2,
                "etcd_connected": False,
                "data_age_s": 12.0,
                "releases": {
                    "r2": {
                        "role": "canary",
                        "traffic_share": 0.1,
                        "sessions": 4,
                        "shadow_similarity": None,
                        "windows": windows,
                    }
                },
                "canary_vs_stable": {"error_rate": {"delta": 0.09}, "p95_ms": {"ratio": 1.2}},
                "rollout": {"release": "r2", "state": "running", "percent": 10.0},
                "health_gate": None,
            }
        ]
    }
    text = status(body)
    assert "r2 (canary)  10.0%" in text and "10.0%" in text
    assert "etcd unreachable, data 12.0s old" in text
    assert "error_rate +9.0%" in text and "p95_ms x1.20" in text
    assert "health gate: none" in text
