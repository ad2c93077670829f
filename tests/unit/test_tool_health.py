"""Tool-contract signals: the sidecar's counters -> health snapshot -> fleet windows -> status."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from configsvc.cli.render.health import status as render_status
from configsvc.health.tools import by_release, difference
from configsvc.health.windows import FleetWindows
from holdfast.keyspace import HealthSnapshot, RecordError
from holdfast.keyspace.tool_signals import HIST_LEN, ToolSignals
from sidecar.contracts.stats import ContractStats


def stats_with_traffic() -> ContractStats:
    stats = ContractStats(CollectorRegistry(), "support")
    stats.tool_call("r1", "search", "1.0.0", "ok", 0.020)
    stats.tool_call("r1", "search", "1.0.0", "invalid_result", 0.030)
    stats.tool_call("r1", "search", "1.0.0", "timeout", 2.0)
    stats.violation("r1", "search", "1.0.0", "result", "degraded")
    stats.violation("r1", "search", "1.0.0", "call", "rejected")
    stats.violation("r2", "weather", "2.0.0", "declared", "reported")
    stats.missing("r2", "weather", "2.0.0")
    return stats


def snap(sidecar: str, at: float, tools: tuple[ToolSignals, ...], started: float = 0.0
         ) -> HealthSnapshot:  # fmt: skip
    return HealthSnapshot(sidecar_id=sidecar, agent="support", at=at, started_at=started,
                          config_revision=1, tools=tools)  # fmt: skip


def test_contract_stats_become_snapshot_records_that_survive_encoding() -> None:
    tools = stats_with_traffic().tool_signals()
    search = next(t for t in tools if t.tool == "search")
    assert search.counts == {"calls": 3, "outcome_invalid_result": 1, "outcome_timeout": 1,
                             "violation_result": 1, "violation_call": 1}  # fmt: skip
    assert search.errors == 2 and search.violations == 2 and sum(search.latency_ms) == 3
    assert search.latency_ms_sum == pytest.approx(2050.0)
    weather = next(t for t in tools if t.tool == "weather")
    assert weather.counts == {"violation_declared": 1, "unavailable": 1}
    back = HealthSnapshot.decode(snap("sc-1", 10.0, tools).encode())
    assert back.tools == tools


def test_decoding_is_tolerant_of_new_names_and_strict_on_types() -> None:
    base = {"release": "r1", "tool": "search", "version": "1.0.0", "latency_ms": [0] * HIST_LEN}
    t = ToolSignals.from_map({**base, "counts": {"calls": 2, "future_thing": 9}})
    assert t.counts == {"calls": 2}
    assert ToolSignals.from_map({**base, "latency_ms": [1, 2]}).latency_ms == (0,) * HIST_LEN
    for bad in ({"calls": -1}, {"calls": "2"}, {"calls": True}):
        with pytest.raises(RecordError):
            ToolSignals.from_map({**base, "counts": bad})
    with pytest.raises(RecordError):
        ToolSignals.from_map({**base, "tool": "bad tool/name"})


def test_fleet_windows_sum_sidecars_and_take_differences_per_tool() -> None:
    a1 = stats_with_traffic().tool_signals()
    fleet = FleetWindows(min_spacing_s=0.0)
    fleet.observe(snap("sc-1", 0.0, a1))
    fleet.observe(snap("sc-2", 100.0, a1))
    more = stats_with_traffic()
    for _ in range(3):
        more.violation("r1", "search", "1.0.0", "call", "rejected")
    fleet.observe(snap("sc-1", 100.0, more.tool_signals()))
    window = by_release(fleet.tool_window("support", 60.0, 100.0))
    # sc-1: only what came after t=0 (3 call violations); sc-2: no history yet, all of it.
    assert window["r1"]["search"]["violations_by_kind"] == {"call": 4, "result": 1}
    assert window["r1"]["search"]["calls"] == 3
    total = by_release(fleet.tool_since_start("support"))
    search = total["r1"]["search"]
    assert search["calls"] == 6 and search["violations"] == 7 and search["errors"] == 4
    assert search["error_rate"] == pytest.approx(4 / 6) and search["version"] == "1.0.0"
    assert total["r2"]["weather"]["unavailable"] == 2


def test_counters_that_went_down_count_whole_never_negative() -> None:
    old = stats_with_traffic().tool_signals()
    fresh = ContractStats(CollectorRegistry(), "support")
    fresh.tool_call("r1", "search", "1.0.0", "ok", 0.01)
    diff = difference({t.key: t for t in fresh.tool_signals()}, {t.key: t for t in old})
    assert [d.counts for d in diff] == [{"calls": 1}]


def test_status_output_has_a_tool_table() -> None:
    fleet = FleetWindows()
    fleet.observe(snap("sc-1", 0.0, stats_with_traffic().tool_signals()))
    tools = by_release(fleet.tool_since_start("support"))
    body = {"agents": [{
        "agent": "support", "stable": "r1", "canary": None, "canary_percent": 0, "sidecars": 1,
        "releases": {r: {"role": "stable", "windows": {"1m": {
            "requests": 0, "error_rate": None, "p50_ms": None, "p95_ms": None,
            "tokens_per_request": None, "cost_per_request": None, "violations": 0}},
            "tools": {"1m": tools.get(r, {})}} for r in ("r1", "r2")},
        "canary_vs_stable": None, "rollout": None}]}  # fmt: skip
    text = render_status(body, "1m")
    assert "TOOL" in text and "search@1.0.0" in text and "weather@2.0.0" in text
    line = next(x for x in text.splitlines() if "search@1.0.0" in x)
    assert "2 (66.7%)" in line and "call=1,result=1" in line
