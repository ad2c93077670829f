"""The tool-call circuit breakers: per backend (transport) and per contract version (results)."""

from __future__ import annotations

import pytest

from sidecar.contracts.backend import NEUTRAL, RETRYABLE
from sidecar.contracts.breakers import (
    CONTRACT_FAILURES,
    TRANSPORT_FAILURES,
    Admission,
    Refusal,
    ToolBreakers,
)

URL = "http://tools.internal/search"


def admitted(breakers: ToolBreakers, version: str, now: float) -> Admission:
    got = breakers.admit(URL, "search", version, now)
    assert isinstance(got, Admission), got
    return got


def refused(breakers: ToolBreakers, version: str, now: float) -> Refusal:
    got = breakers.admit(URL, "search", version, now)
    assert isinstance(got, Refusal), got
    return got


def test_invalid_results_of_one_version_do_not_block_another() -> None:
    breakers = ToolBreakers(failure_threshold=5, reset_after=10)
    for i in range(6):
        call = breakers.admit(URL, "search", "1.0.0", float(i))
        if i < 5:
            assert isinstance(call, Admission)
            breakers.record(call, "invalid_result", float(i))
        else:
            assert call == Refusal("contract", 9.0, 5)  # opened at t=4
    v2 = admitted(breakers, "2.0.0", 6.0)
    breakers.record(v2, "ok", 6.0)
    assert breakers.backends[URL].state == "closed"
    assert breakers.contracts[(URL, "search", "1.0.0")].state == "open"


@pytest.mark.parametrize("outcome", ["timeout", "unreachable", "backend_error", "too_large",
                                     "not_json"])  # fmt: skip
def test_transport_failures_stop_every_version(outcome: str) -> None:
    breakers = ToolBreakers(failure_threshold=3, reset_after=10)
    for i, version in enumerate(("1.0.0", "2.0.0", "1.0.0")):
        breakers.record(admitted(breakers, version, float(i)), outcome, float(i))
    assert refused(breakers, "2.0.0", 3.0).by == "backend"
    assert refused(breakers, "3.0.0", 3.0).by == "backend"
    assert breakers.contracts[(URL, "search", "1.0.0")].state == "closed"


def test_an_answer_that_breaks_the_contract_is_a_healthy_transport() -> None:
    breakers = ToolBreakers(failure_threshold=2, reset_after=10)
    breakers.record(admitted(breakers, "1.0.0", 0), "timeout", 0)
    breakers.record(admitted(breakers, "1.0.0", 1), "invalid_result", 1)
    breakers.record(admitted(breakers, "1.0.0", 2), "timeout", 2)
    assert breakers.backends[URL].state == "closed"  # the run of timeouts was broken


@pytest.mark.parametrize("outcome", sorted(NEUTRAL))
def test_neutral_outcomes_release_the_probe(outcome: str) -> None:
    breakers = ToolBreakers(failure_threshold=1, reset_after=10)
    breakers.record(admitted(breakers, "1.0.0", 0), "invalid_result", 0)
    probe = admitted(breakers, "1.0.0", 10)
    refused(breakers, "1.0.0", 10)  # one probe at a time
    breakers.record(probe, outcome, 10)
    breakers.record(admitted(breakers, "1.0.0", 10), "ok", 10)
    assert breakers.contracts[(URL, "search", "1.0.0")].state == "closed"


def test_half_open_probe_outcomes() -> None:
    breakers = ToolBreakers(failure_threshold=1, reset_after=10)
    breakers.record(admitted(breakers, "1.0.0", 0), "backend_error", 0)
    assert refused(breakers, "1.0.0", 9.5) == Refusal("backend", 0.5, 1)
    probe = admitted(breakers, "1.0.0", 10)
    assert refused(breakers, "1.0.0", 10).by == "backend"
    breakers.record(probe, "timeout", 11)  # the probe failed: open for another period
    assert refused(breakers, "1.0.0", 20).retry_in == pytest.approx(1.0)
    probe = admitted(breakers, "1.0.0", 21)
    breakers.release(probe)  # the agent went away: no verdict, the next call probes
    breakers.record(admitted(breakers, "1.0.0", 21), "ok", 21)
    assert breakers.backends[URL].state == "closed"
    assert breakers.backends[URL].times_opened == 2


def test_a_contract_refusal_gives_back_the_backend_probe() -> None:
    breakers = ToolBreakers(failure_threshold=1, reset_after=10)
    breakers.record(admitted(breakers, "1.0.0", 0), "invalid_result", 0)
    breakers.record(admitted(breakers, "2.0.0", 1), "timeout", 1)
    probe = admitted(breakers, "1.0.0", 11)  # both half-open: v1's probe holds both
    assert refused(breakers, "1.0.0", 11).by == "backend"
    breakers.record(probe, "invalid_result", 11)  # transport fine, v1's result still broken
    assert refused(breakers, "1.0.0", 12).by == "contract"
    # v1's refusal did not keep the backend probe: a v2 call goes through
    breakers.record(admitted(breakers, "2.0.0", 12), "ok", 12)
    assert breakers.backends[URL].state == "closed"


def test_view_for_status() -> None:
    breakers = ToolBreakers(failure_threshold=1, reset_after=10)
    breakers.record(admitted(breakers, "1.0.0", 0), "invalid_result", 0)
    backends, contracts = breakers.view(4.0)
    assert backends[URL]["state"] == "closed"
    assert contracts == {"search@1.0.0": {"backend": URL, "state": "open",
                                          "failures_in_a_row": 1, "times_opened": 1,
                                          "retry_in_s": 6.0}}  # fmt: skip


def test_every_outcome_of_a_call_has_one_kind() -> None:
    judged = {"ok"} | TRANSPORT_FAILURES | CONTRACT_FAILURES | NEUTRAL
    assert len(judged) == 1 + len(TRANSPORT_FAILURES) + len(CONTRACT_FAILURES) + len(NEUTRAL)
    assert RETRYABLE <= TRANSPORT_FAILURES
