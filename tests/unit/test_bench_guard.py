"""The overhead bench's pure parts added for issue 20: peers as paths, the event-loop lag read
from a histogram, first turns, the regression guard's decisions and the report's tables.

Nothing here times anything: synthetic phase results go in, verdicts and Markdown come out.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench import peers
from bench.cpu import RELAY
from bench.figures import Results, guard, held, verdicts
from bench.http1 import Reply, Target
from bench.loadgen import LoadResult
from bench.looplag import Histogram, parse
from bench.phases import PathRun, new_sessions
from bench.plan import Plan
from bench.report import render
from bench.report_tables import guard_section, summary_section
from bench.stack import BARE, DIRECT, FIRST, LATER, SESSION_HEADER, SIDECAR, Cores, turn_path

LAG_TEXT = """# HELP holdfast_event_loop_lag_seconds How late the loop ran a scheduled callback.
# TYPE holdfast_event_loop_lag_seconds histogram
holdfast_event_loop_lag_seconds_bucket{le="0.001"} 90.0
holdfast_event_loop_lag_seconds_bucket{le="0.002"} 98.0
holdfast_event_loop_lag_seconds_bucket{le="0.01"} 100.0
holdfast_event_loop_lag_seconds_bucket{le="+Inf"} 100.0
holdfast_event_loop_lag_seconds_count 100.0
holdfast_event_loop_lag_seconds_sum 0.08
# HELP holdfast_requests_total Requests.
# TYPE holdfast_requests_total counter
holdfast_requests_total 7.0
"""


def lag(
    *cumulative: float, bounds: tuple[float, ...] = (0.001, 0.002, 0.01, math.inf)
) -> Histogram:
    return Histogram(bounds, cumulative, cumulative[-1], 0.0)


# -- event-loop lag ----------------------------------------------------------------------------


def test_lag_histogram_is_read_from_an_exposition_and_its_quantiles_interpolate() -> None:
    hist = parse(LAG_TEXT)
    assert hist is not None
    assert hist.bounds == (0.001, 0.002, 0.01, math.inf)
    assert (hist.count, hist.total) == (100.0, 0.08)
    assert hist.quantile(0.5) == pytest.approx(50 / 90 * 0.001)  # inside the first bucket
    assert hist.quantile(0.99) == pytest.approx(0.002 + 0.008 * (99 - 98) / 2)
    assert hist.worst_bound == 0.01


def test_lag_is_absent_from_a_sidecar_without_the_metric() -> None:
    assert parse("# TYPE holdfast_requests_total counter\nholdfast_requests_total 7.0\n") is None


def test_lag_of_a_round_is_the_difference_of_two_scrapes() -> None:
    before, after = lag(10, 10, 10, 10), lag(60, 99, 100, 101)
    round_ = after - before
    assert round_.cumulative == (50.0, 89.0, 90.0, 91.0)
    assert round_.count == 91
    assert round_.quantile(0.99) == 0.01  # beyond the last finite bucket: its bound
    assert (round_ + round_).count == 182
    with pytest.raises(ValueError, match="different buckets"):
        _ = after - lag(1, 1, 1, bounds=(0.001, 0.01, math.inf))
    assert math.isnan(lag(0, 0, 0, 0).quantile(0.99))


# -- peers -------------------------------------------------------------------------------------


def test_peers_auto_runs_the_installed_ones_and_says_which_are_missing() -> None:
    chosen, notes = peers.choose("auto", [peers.LITELLM])
    assert chosen == [peers.LITELLM]
    assert len(notes) == 1 and peers.PORTKEY in notes[0]
    assert peers.choose("none", peers.KNOWN) == ([], [])
    assert peers.choose("litellm, portkey", peers.KNOWN) == ([peers.LITELLM, peers.PORTKEY], [])


def test_a_peer_asked_for_by_name_must_be_installed_and_known() -> None:
    with pytest.raises(peers.PeerError, match=r"setup\.sh --peers"):
        peers.choose("portkey", [peers.LITELLM])
    with pytest.raises(peers.PeerError, match="unknown"):
        peers.choose("kong", peers.KNOWN)


def test_nothing_counts_as_installed_in_an_empty_folder(tmp_path: Path) -> None:
    assert peers.installed(tmp_path) == []
    gateway = tmp_path / peers.PORTKEY / peers.PORTKEY_PACKAGE / "build" / "start-server.js"
    gateway.parent.mkdir(parents=True)
    gateway.write_text("")
    assert peers.installed(tmp_path) == [peers.PORTKEY]


def test_litellm_routes_each_bench_model_to_the_fake_upstream() -> None:
    config = peers.litellm_config(["bench-fast", "bench-stream"], "http://127.0.0.1:9/v1")
    models = config["model_list"]
    assert isinstance(models, list)
    assert [m["model_name"] for m in models] == ["bench-fast", "bench-stream"]
    assert models[1]["litellm_params"] == {
        "model": "openai/bench-stream",
        "api_base": "http://127.0.0.1:9/v1",
        "api_key": "bench",
    }


def test_portkey_headers_travel_in_every_pre_encoded_request() -> None:
    target = Target.chat(
        "http://127.0.0.1:9900", {"model": "m"}, dict(peers.portkey_headers("http://u:1/v1"))
    )
    raw = target.encode()
    assert b"x-portkey-provider: openai\r\n" in raw
    assert b"x-portkey-custom-host: http://u:1/v1\r\n" in raw
    assert raw.endswith(b'\r\n\r\n{"model":"m"}')


def test_first_turns_each_open_a_session_never_used_before() -> None:
    target = Target.chat("http://127.0.0.1:9900", {"model": "m"})
    encoded = new_sessions(target, 50) + new_sessions(target, 50)
    sessions = {
        line for raw in encoded for line in raw.split(b"\r\n") if line.startswith(b"X-Holdfast")
    }
    assert len(sessions) == 100
    assert all(s.startswith(SESSION_HEADER.encode() + b": first-") for s in sessions)


# -- verdicts, guard, report -------------------------------------------------------------------


def run_of(
    latencies_ms: list[float],
    *,
    cpu_s: float = 0.0,
    rates: tuple[float, ...] = (100.0,),
    events: int = 0,
    ttfb_ms: float | None = None,
    elapsed: float = 1.0,
    loop_lag: Histogram | None = None,
) -> PathRun:
    load = LoadResult(elapsed=elapsed)
    for ms in latencies_ms:
        first = (ttfb_ms if ttfb_ms is not None else ms) / 1000
        load.replies.append(Reply(200, 0.0, first, ms / 1000, 10, events, events))
    run = PathRun(load=load, round_rates=list(rates), lag=loop_lag)
    run.cpu[RELAY] = cpu_s
    return run


def results(*, side_cpu: float, side_p99: float, side_lag: Histogram | None) -> Results:
    """Direct, bare relay, sidecar and one peer; the sidecar's figures as given."""
    lat = [1.0] * 98
    latency = {
        DIRECT: run_of([*lat, 2.0, 2.0], elapsed=1.0),
        BARE: run_of([*lat, 3.0, 3.0], cpu_s=0.02),
        SIDECAR: run_of([*lat, side_p99, side_p99], cpu_s=0.03, loop_lag=side_lag),
        "Portkey": run_of([*lat, 50.0, 50.0], elapsed=3.0),  # a backlog: a third of the rate
    }
    throughput = {
        DIRECT: run_of([5.0] * 100, rates=(2000.0,)),
        BARE: run_of([5.0] * 100, cpu_s=0.02, rates=(1000.0, 1000.0)),
        SIDECAR: run_of([5.0] * 100, cpu_s=side_cpu, rates=(700.0, 700.0)),
        "Portkey": run_of([5.0] * 100, cpu_s=0.1, rates=(200.0, 200.0)),
    }
    streaming = {
        DIRECT: run_of([400.0] * 100, events=200, ttfb_ms=1.0),
        BARE: run_of([400.0] * 100, events=200, ttfb_ms=3.0, cpu_s=0.9),
        SIDECAR: run_of([400.0] * 100, events=200, ttfb_ms=5.0, cpu_s=1.0, loop_lag=side_lag),
        "Portkey": run_of([430.0] * 100, events=200, ttfb_ms=30.0, cpu_s=1.3),
    }
    first_turns = {
        DIRECT: run_of([1.0] * 10),
        turn_path(SIDECAR, FIRST): run_of([2.5] * 10),
        turn_path(SIDECAR, LATER): run_of([2.0] * 10),
    }
    paths = [DIRECT, BARE, SIDECAR, "Portkey"]
    return Results(
        plan=Plan(),
        cores=Cores(0, 1, 2),
        paths=paths,
        latency=latency,
        throughput=throughput,
        streaming=streaming,
        rss_start_mb=dict.fromkeys(paths, 40.0),
        rss_end_mb={DIRECT: math.nan, BARE: 41.0, SIDECAR: 65.0, "Portkey": 96.0},
        started_at="2026-12-07 00:00 UTC",
        wall_seconds=1.0,
        first_turns=first_turns,
        peers={"Portkey": "1.15.2"},
    )


def by_target(res: Results) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for v in verdicts(res):
        out.setdefault(v.target.what, []).append(v.status)
    return out


def test_a_sidecar_within_every_relative_target_passes_the_guard() -> None:
    res = results(side_cpu=0.03, side_p99=3.4, side_lag=lag(95, 100, 100, 100))
    found = verdicts(res)
    assert [v.status for v in found] == ["met"] * len(found)
    assert guard(found)
    cpu = found[0]
    assert cpu.value == pytest.approx(1.5)  # 300 µs over the bare relay's 200 µs per request
    assert "300 µs vs 200 µs" in cpu.detail


def test_the_guard_fails_on_a_missed_target_relative_to_the_bare_relay() -> None:
    # 1.7x the bare relay's CPU per request, and an added p99 twice the bare relay's
    res = results(side_cpu=0.034, side_p99=4.0, side_lag=lag(95, 100, 100, 100))
    status = by_target(res)
    assert status["relay CPU per request, 64 connections"] == ["NOT MET"]
    assert status["added latency p99 at 200 req/s"] == ["NOT MET"]
    assert status["throughput on one core"] == ["met"]
    assert not guard(verdicts(res))


def test_loop_lag_over_2_ms_fails_and_a_missing_metric_is_skipped() -> None:
    slow = results(side_cpu=0.03, side_p99=3.4, side_lag=lag(50, 90, 100, 100))
    assert by_target(slow)["event-loop lag p99"] == ["NOT MET", "NOT MET"]
    assert not guard(verdicts(slow))
    absent = results(side_cpu=0.03, side_p99=3.4, side_lag=None)
    skipped = [v for v in verdicts(absent) if v.skipped]
    assert [v.target.what for v in skipped] == ["event-loop lag p99"] * 2
    assert "holdfast_event_loop_lag_seconds" in skipped[0].skipped
    assert guard(verdicts(absent))


def test_a_figure_that_could_not_be_computed_fails_the_guard() -> None:
    res = results(side_cpu=0.03, side_p99=3.4, side_lag=lag(95, 100, 100, 100))
    res.throughput[SIDECAR].load.replies.clear()  # nothing served: no CPU per request
    assert by_target(res)["relay CPU per request, 64 connections"] == ["NOT MET"]
    assert not guard(verdicts(res))


def test_first_turn_gap_is_judged_and_skipped_without_its_phase() -> None:
    res = results(side_cpu=0.03, side_p99=3.4, side_lag=lag(95, 100, 100, 100))
    res.first_turns[turn_path(SIDECAR, FIRST)] = run_of([3.5] * 10)
    assert by_target(res)["first turn added p50 above a later turn's"] == ["NOT MET"]
    res.first_turns.clear()
    first = [v for v in verdicts(res) if v.target.what.startswith("first turn")]
    assert first[0].skipped


def test_first_turn_is_judged_where_the_provider_takes_time_and_shows_the_instant_gap() -> None:
    res = results(side_cpu=0.03, side_p99=3.4, side_lag=lag(95, 100, 100, 100))
    res.first_turns[turn_path(SIDECAR, FIRST)] = run_of([4.0] * 10)  # +2 ms: etcd's write
    res.first_turns_slow = {
        DIRECT: run_of([11.0] * 10),
        turn_path(SIDECAR, FIRST): run_of([12.5] * 10),
        turn_path(SIDECAR, LATER): run_of([12.0] * 10),
    }
    first = next(v for v in verdicts(res) if v.target.what.startswith("first turn"))
    assert first.value == pytest.approx(0.5)
    assert first.status == "met"
    assert first.how == "provider answering in 10 ms"
    assert "with a provider answering at once +2.000 ms" in first.detail
    res.first_turns_slow[turn_path(SIDECAR, FIRST)] = run_of([13.5] * 10)
    assert by_target(res)["first turn added p50 above a later turn's"] == ["NOT MET"]
    res.first_turns_slow[turn_path(SIDECAR, LATER)].load.fail("http_503")
    failed = next(v for v in verdicts(res) if v.target.what.startswith("requests that failed"))
    assert failed.value == 1.0
    section = "\n".join(render(res).splitlines())
    assert "The provider answering after 10 ms:" in section
    assert "the same, the provider answering in 10 ms" in section


def test_a_path_that_answers_slower_than_direct_did_not_hold_the_rate() -> None:
    res = results(side_cpu=0.03, side_p99=3.4, side_lag=None)
    assert held(res.latency[SIDECAR], res.latency[DIRECT])
    assert not held(res.latency["Portkey"], res.latency[DIRECT])


def test_summary_has_a_column_per_relay_with_peers_and_marks_a_backlog() -> None:
    res = results(side_cpu=0.03, side_p99=3.4, side_lag=lag(95, 100, 100, 100))
    lines = summary_section(res)
    header = next(line for line in lines if line.startswith("| figure"))
    assert header == "| figure | bare relay | sidecar | Portkey |"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| ")}
    assert "| 200 µs | 300 µs | 1,000 µs |" in rows["relay CPU per request (64 connections)"]
    assert "(cannot hold it: a backlog)" in rows["added latency at 200 req/s, p50 / p99"]
    first = rows["a session's first turn (its pin claimed in etcd), added p50"]
    assert "1.50 ms (later turn 1.00 ms)" in first
    assert first.endswith("| - |")  # no first turns through a peer
    assert "Portkey 1.15.2" in "\n".join(lines)


def test_guard_table_shows_skips_and_misses_and_the_whole_section_renders() -> None:
    res = results(side_cpu=0.034, side_p99=3.4, side_lag=None)
    table = "\n".join(guard_section(res))
    assert "**not met**" in table
    assert "skipped: sidecar exports no holdfast_event_loop_lag_seconds" in table
    section = render(res)
    for heading in (
        "### Summary: every relay in this run",
        "### Sidecar targets (the regression guard)",
        "### A session's first turn against its later turns",
        "### Event-loop lag of the sidecar (and of the bare relay)",
        "Could not hold 200 req/s: Portkey",
    ):
        assert heading in section


def test_a_request_refused_by_the_sidecar_fails_the_guard() -> None:
    res = results(side_cpu=0.03, side_p99=3.4, side_lag=lag(95, 100, 100, 100))
    res.latency[SIDECAR].load.fail("http_429")
    res.first_turns[turn_path(SIDECAR, FIRST)].load.fail("http_503")
    failed = next(v for v in verdicts(res) if v.target.what.startswith("requests that failed"))
    assert (failed.value, failed.status) == (2.0, "NOT MET")
    assert failed.detail == "latency: 1, first turns: 1"
    assert not guard(verdicts(res))


def test_the_bare_relay_samples_its_loop_lag_as_the_sidecar_does() -> None:
    from bench import bare_relay
    from bench.looplag import parse
    from sidecar.ops import loop_lag

    assert bare_relay.LAG_BOUNDS == loop_lag.BOUNDS
    assert bare_relay.LAG_INTERVAL_S == loop_lag.INTERVAL_S
    sampler = bare_relay.LoopLag()
    sampler.buckets[0] += 3  # three lags under half a millisecond
    sampler.buckets[bare_relay.LAG_BOUNDS.index(0.003)] += 1  # one of 3 ms
    sampler.count, sampler.total = 4, 0.003
    histogram = parse(sampler.exposition())
    assert histogram is not None
    assert histogram.count == 4
    assert histogram.cumulative[:6] == (3, 3, 3, 3, 3, 4)
    assert histogram.worst_bound == 0.003


def test_the_loop_lag_verdict_shows_the_bare_relays_beside_it() -> None:
    res = results(side_cpu=0.03, side_p99=3.4, side_lag=lag(95, 100, 100, 100))
    res.latency[BARE].lag = lag(95, 100, 100, 100)
    found = [v for v in verdicts(res) if v.target.what == "event-loop lag p99"]
    assert "the bare relay's" in found[0].detail
