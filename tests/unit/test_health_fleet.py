"""configsvc-side health, continued: every threshold, the gate's window and freshness, pause and
resume, shadow windows, and what a snapshot decoder refuses."""

from __future__ import annotations

import asyncio
import dataclasses
import math

import pytest

from configsvc.health.gate import PolicyGate
from configsvc.health.shadow import shadow_view
from configsvc.health.sums import by_release
from configsvc.health.verdict import evaluate
from configsvc.health.windows import FleetWindows
from holdfast.keyspace import HealthSnapshot, RecordError, Rollout, ShadowStats
from holdfast.keyspace.categories import MAX_CATEGORIES
from holdfast.keyspace.codec import decode_record, encode_record
from holdfast.keyspace.policy import DEFAULT_INCONCLUSIVE_AFTER_S, HealthPolicy
from holdfast.keyspace.session_spread import SessionSpread
from holdfast.keyspace.signals import ReleaseSignals
from tests.unit.test_health_gate import FakeFleet, sig, snap


def priced(
    release: str, n: int, cost: float, violations: int = 0, cat: str = "default"
) -> ReleaseSignals:
    base = sig(release, n, category=cat, tokens=10)
    counts = dict(base.counts) | {"violations": violations}
    return dataclasses.replace(base, counts=counts, sums={"cost_usd": cost})


def keyed(*signals: ReleaseSignals) -> dict[tuple[str, str], ReleaseSignals]:
    return {s.key: s for s in signals}


def test_cost_violation_and_shadow_thresholds_fail_pass_and_wait() -> None:
    policy = HealthPolicy(
        max_error_rate_delta=None,
        max_p95_ratio=None,
        max_cost_ratio=1.3,
        max_violation_rate_delta=0.05,
        min_shadow_similarity=0.8,
        min_samples=20,
    )
    like = ShadowStats(primary="r1", shadow="r2", epoch=1.0, samples=30, similarity_sum=27.0)
    good = keyed(priced("r1", 100, 1.0, 2), priced("r2", 100, 1.2, 4))
    assert evaluate(policy, good, canary="r2", stable="r1", shadow=[like]).verdict == "pass"
    dear = keyed(priced("r1", 100, 1.0), priced("r2", 100, 1.5))
    result = evaluate(policy, dear, canary="r2", stable="r1", shadow=[like])
    assert [c.gate for c in result.failing] == ["max_cost_ratio"] * 2  # overall and default
    assert "x1.50 > x1.3" in result.summary()
    broken = keyed(priced("r1", 100, 1.0, 1), priced("r2", 100, 1.0, 20))
    result = evaluate(policy, broken, canary="r2", stable="r1", shadow=[like])
    assert {c.gate for c in result.failing} == {"max_violation_rate_delta"}
    assert "delta +0.190 > 0.05" in result.summary()
    unlike = dataclasses.replace(like, similarity_sum=15.0)
    result = evaluate(policy, good, canary="r2", stable="r1", shadow=[unlike])
    assert [c.gate for c in result.failing] == ["min_shadow_similarity"]
    assert "similarity 0.500 < 0.8 over 30 samples" in result.summary()
    few = dataclasses.replace(like, samples=5, similarity_sum=1.0)
    result = evaluate(policy, good, canary="r2", stable="r1", shadow=[few])
    assert result.verdict == "inconclusive" and "5 shadow samples, need 20" in result.summary()
    # a shadow of another release says nothing about this canary
    other = dataclasses.replace(unlike, shadow="r9")
    assert evaluate(policy, good, canary="r2", stable="r1", shadow=[other]).verdict == (
        "inconclusive"
    )
    free = keyed(priced("r1", 100, 0.0), priced("r2", 100, 1.0))
    (cost,) = [
        c
        for c in evaluate(policy, free, canary="r2", stable="r1", shadow=[like]).checks
        if c.gate == "max_cost_ratio" and c.scope == "overall"
    ]
    assert cost.verdict == "inconclusive" and "stable has 0" in cost.detail


def rollout(started_at: float, **policy: object) -> Rollout:
    return Rollout(
        release="r2",
        steps=(10.0, 100.0),
        interval_s=60.0,
        started_at=started_at,
        policy=HealthPolicy(min_samples=20, fails_to_abort=2, **policy),  # type: ignore[arg-type]
    )


def test_the_gate_judges_only_traffic_since_the_rollout_started() -> None:
    windows = FleetWindows(min_spacing_s=0.0)
    fleet = FakeFleet(windows)
    gate = PolicyGate(fleet)  # type: ignore[arg-type]
    # a first attempt of r2 failed badly until 1950; the second attempt starts at 1960
    windows.observe(snap("a", 1900.0, sig("r1", 100), sig("r2", 10)))
    windows.observe(snap("a", 1950.0, sig("r1", 200), sig("r2", 110, 100)))
    windows.observe(snap("a", 1960.0, sig("r1", 210), sig("r2", 110, 100)))
    windows.observe(snap("a", 1990.0, sig("r1", 300), sig("r2", 150, 100)))
    assert by_release(windows.window("support", 60, 2000.0))["r2"].errors == 100
    since = by_release(windows.window("support", 60, 2000.0, since=1960.0))["r2"]
    assert since.count("requests") == 40 and since.errors == 0
    decision = asyncio.run(gate.judge("support", rollout(1960.0), "r1"))
    assert decision.action == "proceed", decision
    # the first attempt, judged on the same data, fails
    assert asyncio.run(gate.judge("support", rollout(1890.0), "r1")).action == "hold"
    # a sidecar that started after the rollout counts whole; one with no snapshot since: nothing
    windows.observe(snap("b", 1995.0, sig("r2", 7), started=1970.0))
    assert (
        by_release(windows.window("support", 60, 2000.0, since=1960.0))["r2"].count("requests")
        == 47
    )


def test_fresh_data_is_the_canarys_own_not_any_snapshot() -> None:
    windows = FleetWindows()
    fleet = FakeFleet(windows)
    gate = PolicyGate(fleet)  # type: ignore[arg-type]
    windows.observe(snap("a", 1990.0, sig("r1", 100), sig("r2", 100, 40)))
    assert asyncio.run(gate.judge("support", rollout(1.0), "r1")).reason == "failing (1/2)"
    # other agents' sidecars beat, and this agent's stable gets traffic: not new canary data
    for i in range(5):
        other = HealthSnapshot(
            sidecar_id=f"x{i}", agent="billing", at=1991.0 + i, started_at=0.0,
            config_revision=1, signals=(sig("r2", 10 + i),),
        )  # fmt: skip
        windows.observe(other)
        windows.observe(snap("b", 1991.0 + i, sig("r1", 10 + i)))
        decision = asyncio.run(gate.judge("support", rollout(1.0), "r1"))
        assert decision.action == "hold" and decision.reason == "failing (1/2)"
    windows.observe(snap("a", 1996.0, sig("r1", 100), sig("r2", 110, 50)))
    assert asyncio.run(gate.judge("support", rollout(1.0), "r1")).action == "abort"


def test_pause_and_resume_restart_the_inconclusive_clock() -> None:
    windows = FleetWindows()
    fleet = FakeFleet(windows)
    gate = PolicyGate(fleet)  # type: ignore[arg-type]
    running = rollout(1.0, inconclusive_after_s=30.0)
    paused = dataclasses.replace(running, state="paused")
    assert asyncio.run(gate.judge("support", running, "r1")).action == "hold"
    fleet.now += 20
    # paused by an operator for an hour: the deadline does not run meanwhile
    assert asyncio.run(gate.judge("support", paused, "r1")).action == "hold"
    fleet.now += 3600
    assert asyncio.run(gate.judge("support", paused, "r1")).action == "hold"
    resumed = asyncio.run(gate.judge("support", running, "r1"))
    assert resumed.action == "hold" and "inconclusive" in resumed.reason
    fleet.now += 29
    assert asyncio.run(gate.judge("support", running, "r1")).action == "hold"
    fleet.now += 2
    decision = asyncio.run(gate.judge("support", running, "r1"))
    assert decision.action == "pause" and "inconclusive for 31s" in decision.reason
    # a paused rollout is still aborted when it fails
    windows.observe(snap("a", fleet.now - 1, sig("r1", 100), sig("r2", 100, 60)))
    assert asyncio.run(gate.judge("support", paused, "r1")).action == "hold"
    windows.observe(snap("a", fleet.now, sig("r1", 110), sig("r2", 110, 70)))
    assert asyncio.run(gate.judge("support", paused, "r1")).action == "abort"
    assert HealthPolicy().inconclusive_after_s == DEFAULT_INCONCLUSIVE_AFTER_S == 600.0


def test_shadow_comparisons_are_windowed_and_status_shows_tool_agreement() -> None:
    windows = FleetWindows(min_spacing_s=0.0)

    def beat(at: float, samples: int, sim: float, agree: int) -> None:
        stats = ShadowStats(
            primary="r1", shadow="r2", epoch=5.0, samples=samples, similarity_sum=sim,
            tool_agree=agree, tool_samples=samples,
        )  # fmt: skip
        one = HealthSnapshot(
            sidecar_id="a", agent="support", at=at, started_at=0.0, config_revision=1,
            shadow=(stats,),
        )  # fmt: skip
        windows.observe(one)

    beat(1000.0, 100, 95.0, 100)  # long ago: all alike
    beat(1100.0, 100, 95.0, 100)
    beat(1160.0, 140, 105.0, 110)  # the last minute: 40 samples, similarity 0.25, 25% agree
    recent = shadow_view(windows.shadow_window("support", 60, 1160.0), "r2")
    assert recent["samples"] == 40 and recent["similarity"] == pytest.approx(0.25)
    assert recent["tool_agreement"] == pytest.approx(0.25)
    whole = shadow_view(windows.shadow("support"), "r2")
    assert whole["samples"] == 140 and whole["similarity"] == pytest.approx(0.75)
    # a retired sidecar's comparisons still count since the start once they age out
    windows.gone("a")
    windows.prune(10_000.0)
    assert shadow_view(windows.shadow("support"), "r2")["samples"] == 140


def test_snapshot_decoding_refuses_garbage_and_caps_categories() -> None:
    good = HealthSnapshot(
        sidecar_id="s1", agent="support", at=1.0, started_at=0.0, config_revision=1,
        signals=(sig("r1", 3),), sessions=(SessionSpread(release="r1", sessions=1),),
        shadow=(ShadowStats(primary="r1", shadow="r2", epoch=1.0, samples=1, similarity_sum=1.0),),
    )  # fmt: skip
    fields = decode_record(good.encode(), kind="health")

    def mutated(**changes: object) -> bytes:
        return encode_record("health", fields | changes)

    signal = fields["signals"][0]
    shadow = fields["shadow"][0]
    for bad in (
        mutated(signals=[signal | {"sums": {"cost_usd": math.nan}}]),
        mutated(signals=[signal | {"sums": {"latency_ms_sum": math.inf}}]),
        mutated(at=math.nan),
        mutated(shadow=[shadow | {"similarity_sum": math.inf}]),
        mutated(shadow=[shadow | {"similarity_sum": 5.0}]),  # more than one per sample
        mutated(signals=[signal] * 1025),
        mutated(sessions=[fields["sessions"][0] | {"sessions": -1}]),
    ):
        with pytest.raises(RecordError):
            HealthSnapshot.decode(bad)
    many = [signal | {"category": f"c{i}"} for i in range(200)]
    capped = HealthSnapshot.decode(mutated(signals=many))
    assert len(capped.signals) == MAX_CATEGORIES + 1
    other = next(s for s in capped.signals if s.category == "other")
    assert other.count("requests") == 3 * (200 - MAX_CATEGORIES)
    assert sum(s.count("requests") for s in capped.signals) == 600


def test_a_marked_start_keeps_the_first_beat_after_it_in_sparse_history() -> None:
    def run(marked: bool) -> int:
        windows = FleetWindows()  # default spacing: history sparser than the beats
        for i in range(40):  # a beat every 0.5 s, one request each
            at = 1000.0 + i / 2
            if marked and at == 1010.5:
                windows.mark(1010.2)  # the gate sees the rollout a tick after its start
            windows.observe(snap("a", at, sig("r2", i)))
        clipped = windows.window("support", 60, 1019.5, since=1010.2)
        return by_release(clipped)["r2"].count("requests") if clipped else 0

    # counted from the first beat after the start (at 1010.5, request 21)
    assert run(marked=True) == 39 - 21
    assert run(marked=False) < 39 - 21  # unmarked, seconds of the new traffic were lost
