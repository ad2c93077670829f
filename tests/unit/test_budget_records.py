"""Budget, quota and spend records; configsvc's strict parsing of budget bodies."""

from __future__ import annotations

import json

import msgpack
import pytest

from configsvc.budgets.payloads import SetBudget, budget_scope, parse_action
from configsvc.errors import InvalidRequest
from holdfast.keyspace import Keyspace, RecordError
from holdfast.keyspace.budget import Budget, decode_budget, is_fleet, scope_kind
from holdfast.keyspace.quota import Quotas, SpendReport


def test_scopes() -> None:
    assert scope_kind("global") == "global"
    assert scope_kind("session:abc-1@x") == "session"
    assert scope_kind("tenant:Acme") == "tenant"
    assert scope_kind("agent:support") == "agent"
    assert is_fleet("agent:support") and not is_fleet("session:s1")
    for bad in ("agent:Bad Name", "user:x", "session:", "global:x", "session:a/b", "x" * 200):
        with pytest.raises(RecordError):
            scope_kind(bad)
    assert Keyspace("dev").budget("session:s1").endswith("/budgets/session:s1")


def test_budget_round_trip_and_key_check() -> None:
    b = Budget(
        scope="agent:support",
        tokens=1000,
        window="day",
        zone="Europe/Paris",
        soft=0.5,
        action="degrade",
        degrade_to="r-cheap",
        request_cap=256,
    )
    assert Budget.decode(b.encode()) == b
    assert b.on_exhausted == "degrade:r-cheap"
    assert decode_budget(("agent:support",), b.encode()) == b
    with pytest.raises(RecordError, match="scope"):
        decode_budget(("agent:other",), b.encode())


@pytest.mark.parametrize(
    "change",
    [
        {"tokens": 0},
        {"tokens": -5},
        {"window": "1w"},
        {"soft": 0.0},
        {"soft": 1.5},
        {"zone": "Nowhere/Land"},
        {"action": "degrade"},
        {"action": "explode"},
        {"request_cap": -1},
    ],
)
def test_bad_budget_records_are_refused(change: dict[str, object]) -> None:
    fields = {"scope": "global", "tokens": 10, "window": "1h", **change}
    raw = msgpack.packb({"_v": 1, "_k": "budget", **fields})
    with pytest.raises(RecordError):
        Budget.decode(raw)


def test_quotas_and_spend_round_trip() -> None:
    q = Quotas(scope="global", window="1h@5", limit=100, grants={"a.1": 60, "b.2": 40}, used=7)
    assert Quotas.decode(q.encode()) == q
    s = SpendReport(
        scope="global",
        holder="a.1",
        window="1h@5",
        used=5,
        reserved=2,
        returned=1,
        estimated=3,
        want=50,
    )
    assert SpendReport.decode(s.encode()) == s
    with pytest.raises(RecordError):
        SpendReport(scope="global", holder="a/1", window="w", used=1)
    with pytest.raises(RecordError):
        Quotas(scope="global", window="w", limit=10, grants={"a": -1})


def _set(**body: object) -> SetBudget:
    return SetBudget.parse(json.dumps(body).encode())


def test_set_budget_body() -> None:
    req = _set(tokens=5000, window="1h", soft=0.9, on_exhausted="degrade:r2", reason="x")
    assert (req.tokens, req.window, req.zone, req.soft) == (5000, "1h", "UTC", 0.9)
    assert (req.action, req.degrade_to, req.request_cap) == ("degrade", "r2", 0)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tokens": 0, "window": "1h"}, "tokens"),
        ({"tokens": -1, "window": "1h"}, "tokens"),
        ({"tokens": 1.5, "window": "1h"}, "tokens"),
        ({"tokens": True, "window": "1h"}, "tokens"),
        ({"window": "1h"}, "tokens"),
        ({"tokens": 10, "window": "fortnight"}, "window"),
        ({"tokens": 10, "window": "day", "zone": "Atlantis/Capital"}, "zone"),
        ({"tokens": 10, "window": "1h", "soft": 2}, "soft"),
        ({"tokens": 10, "window": "1h", "on_exhausted": "explode"}, "on_exhausted"),
        ({"tokens": 10, "window": "1h", "on_exhausted": "degrade:"}, "on_exhausted"),
        ({"tokens": 10, "window": "1h", "request_cap": 0}, "request_cap"),
        ({"tokens": 10, "window": "1h", "prices": {"gpt": "cheap"}}, "prices"),
    ],
)
def test_set_budget_refusals_name_the_field(body: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        SetBudget.parse(json.dumps(body).encode())
    assert info.value.param == param


def test_scope_and_action_parsing() -> None:
    with pytest.raises(InvalidRequest):
        budget_scope("everyone")
    assert parse_action("reject") == ("reject", "")
    assert parse_action("degrade:r-cheap") == ("degrade", "r-cheap")
    with pytest.raises(InvalidRequest):
        SetBudget.parse(b"[1, 2]")
