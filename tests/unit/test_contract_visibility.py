"""Contracts where on-call looks: the sidecar's /status section and `release show`."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from configsvc.cli.render.tables import release as render_release
from holdfast.keyspace import Keyspace, Release, Route
from holdfast.keyspace.contract import Contract
from holdfast.store import KeyValue
from sidecar.config.kinds import CONFIG_KINDS
from sidecar.config.state import ConfigState
from sidecar.contracts.book import ContractBook
from sidecar.contracts.breakers import Refusal, ToolBreakers
from sidecar.contracts.stats import ContractStats
from sidecar.contracts.status import contract_status

KS = Keyspace("dev")
ARGS = {"type": "object", "properties": {"q": {"type": "string"}}}
RESULT = {"type": "object"}


def config() -> ConfigState:
    state = ConfigState(KS, "support", kinds=CONFIG_KINDS)
    search = Contract(tool="search", version="1.0.0", args_schema=ARGS, result_schema=RESULT,
                      backend="http://127.0.0.1:9/search")  # fmt: skip
    records = {
        KS.contract("search", "1.0.0"): search.encode(),
        KS.release("support", "r1"): Release(
            agent="support",
            name="r1",
            model="m",
            base_url="http://127.0.0.1:9/v1",
            contracts={"search": "1.0.0", "weather": "3.0.0"},
        ).encode(),
        KS.release("support", "r0"): Release(
            agent="support", name="r0", model="m", base_url="http://127.0.0.1:9/v1"
        ).encode(),
        KS.route("support"): Route(agent="support", stable="r1").encode(),
    }
    state.apply_reset(1, {k: KeyValue(k, v, 1, 1, 1) for k, v in records.items()}, "etcd")
    return state


def test_status_lists_pins_unavailable_versions_breakers_and_counters() -> None:
    stats = ContractStats(CollectorRegistry(), "support")
    stats.violation("r1", "search", "1.0.0", "args", "rejected")
    breakers = ToolBreakers(failure_threshold=1, reset_after=10.0)
    called = breakers.admit("http://127.0.0.1:9/search", "search", "1.0.0", 100.0)
    assert not isinstance(called, Refusal)
    breakers.record(called, "invalid_result", 100.0)
    called = breakers.admit("http://127.0.0.1:9/search", "search", "2.0.0", 101.0)
    assert not isinstance(called, Refusal)
    breakers.record(called, "timeout", 101.0)
    body = contract_status(config(), ContractBook(), stats, breakers, lambda: 104.0)
    assert list(body["releases"]) == ["r1"]  # r0 pins nothing
    r1 = body["releases"]["r1"]
    assert r1["role"] == "stable"
    assert r1["tools"]["search"] == {"version": "1.0.0", "held": True, "policy": "enforce",
                                     "backend": "http://127.0.0.1:9/search"}  # fmt: skip
    assert r1["tools"]["weather"]["held"] is False
    assert body["unavailable"] == ["r1:weather@3.0.0"]
    assert body["breakers"]["http://127.0.0.1:9/search"] == {
        "state": "open", "failures_in_a_row": 1, "times_opened": 1, "retry_in_s": 7.0}  # fmt: skip
    assert body["result_breakers"] == {
        "search@1.0.0": {"backend": "http://127.0.0.1:9/search", "state": "open",
                         "failures_in_a_row": 1, "times_opened": 1, "retry_in_s": 6.0},
        "search@2.0.0": {"backend": "http://127.0.0.1:9/search", "state": "closed",
                         "failures_in_a_row": 0, "times_opened": 0, "retry_in_s": 0.0}}  # fmt: skip
    assert body["stats"][0]["violations"] == {"args": 1}


def test_release_show_names_the_pinned_contracts() -> None:
    body = {"release": {"agent": "support", "release": "r4", "model": "m", "base_url": "http://x",
                        "contracts": {"weather": "1.3.0", "search": "2.0.0"},
                        "contract_policy": "rewrite"}}  # fmt: skip
    text = render_release(body)
    assert "contracts:    search=2.0.0, weather=1.3.0 (policy rewrite for all)" in text
    plain = render_release({"release": {**body["release"], "contracts": {},
                                        "contract_policy": ""}})  # fmt: skip
    assert "contracts:    -" in plain
