"""Traffic payloads, pure route edits (canary, switch, shadow) and migration selection."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from configsvc.errors import InvalidRequest, NoPreviousRelease, RolloutActive
from configsvc.traffic import edits as tr
from configsvc.traffic.payloads import (
    MigratePins,
    PinsQuery,
    Reason,
    ReportQuery,
    SetCanary,
    SetShadow,
    Switch,
)
from configsvc.traffic.pins import Selection
from holdfast import bucketing
from holdfast.keyspace import Pin, Rollout, Route, Shadow

AGENT = "support"


def raw(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def test_canary_body() -> None:
    assert SetCanary.parse(raw({"release": "r2", "percent": 12.5, "reason": "x"})) == SetCanary(
        release="r2", percent=12.5, reason="x"
    )
    assert SetCanary.parse(raw({"release": "r2", "percent": 0})).percent == 0.0


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"release": "r2", "percent": "10"}, "percent"),
        ({"release": "r2", "percent": True}, "percent"),
        ({"release": "r2", "percent": 100.5}, "percent"),
        ({"release": "r2", "percent": -0.1}, "percent"),
        ({"release": "r2"}, "percent"),
        ({"release": "R2!", "percent": 1}, "release"),
        ({"percent": 1}, "release"),
        ({"release": "r2", "percent": 1, "pct": 1}, "pct"),
    ],
)
def test_canary_body_refusals(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        SetCanary.parse(raw(body))
    assert info.value.param == param


def test_nan_is_not_a_percent() -> None:
    with pytest.raises(InvalidRequest):
        SetCanary.parse(b'{"release": "r2", "percent": NaN}')


def test_switch_body() -> None:
    assert Switch.parse(raw({"release": "r2"})) == Switch(release="r2")
    back = Switch.parse(raw({"back": True, "migrate": True, "reason": "oops"}))
    assert (back.back, back.migrate, back.release, back.probe) == (True, True, "", True)
    assert Switch.parse(raw({"release": "r2", "probe": False})).probe is False
    for bad in ({}, {"release": "r2", "back": True}, {"back": "yes"}, {"release": "r2", "x": 1}):
        with pytest.raises(InvalidRequest):
            Switch.parse(raw(bad))


def test_shadow_body_and_report_query() -> None:
    req = SetShadow.parse(raw({"release": "r3", "percent": 5, "min_similarity": 0.5}))
    assert (req.min_samples, req.min_similarity, req.min_agreement) == (50, 0.5, 0.9)
    for bad in (
        {"release": "r3", "percent": 5, "min_samples": 0},
        {"release": "r3", "percent": 5, "min_samples": "10"},
        {"release": "r3", "percent": 5, "min_agreement": 1.1},
    ):
        with pytest.raises(InvalidRequest):
            SetShadow.parse(raw(bad))
    assert ReportQuery.parse({}) == ReportQuery()
    q = ReportQuery.parse({"min_samples": "10", "min_similarity": "0.7"})
    assert (q.min_samples, q.min_similarity, q.min_agreement) == (10, 0.7, None)
    for bad_query in ({"min_samples": "1.5"}, {"min_similarity": "nan"}, {"sample": "1"}):
        with pytest.raises(InvalidRequest):
            ReportQuery.parse(bad_query)


def test_pins_bodies() -> None:
    req = MigratePins.parse(raw({"from": "r1", "to": "r2", "percent": 100, "session": "u:1@x"}))
    assert (req.source, req.target, req.percent, req.session) == ("r1", "r2", 100.0, "u:1@x")
    for bad in (
        {"from": "r1", "to": "r1"},
        {"from": "r1", "to": "r2", "percent": 0},
        {"from": "r1", "to": "r2", "percent": "50"},
        {"from": "r1", "to": "r2", "session": "a b"},
        {"from": "r1"},
        {"from": "r1", "to": "r2", "sessions": ["a"]},
    ):
        with pytest.raises(InvalidRequest):
            MigratePins.parse(raw(bad))
    assert PinsQuery.parse({"release": "r1", "limit": "5"}) == PinsQuery(release="r1", limit=5)
    for bad_query in ({"limit": "0"}, {"limit": "x"}, {"release": "R1"}, {"page": "2"}):
        with pytest.raises(InvalidRequest):
            PinsQuery.parse(bad_query)
    assert Reason.parse(b"") == Reason()
    with pytest.raises(InvalidRequest):
        Reason.parse(raw({"why": "x"}))


ROUTE = Route(agent=AGENT, stable="r1", previous_stable="r0")
RUNNING = Rollout(release="r3", steps=(10.0, 50.0), interval_s=60.0)


def test_canary_edits() -> None:
    route = tr.with_canary(ROUTE, agent=AGENT, release="r2", percent=20, actor="a", now=5.0)
    assert (route.canary, route.canary_percent, route.updated_by) == ("r2", 20, "a")
    same = tr.with_canary(route, agent=AGENT, release="r2", percent=20, actor="b", now=6.0)
    assert same is route
    cleared = tr.without_canary(route, agent=AGENT, actor="a", now=7.0)
    assert (cleared.canary, cleared.canary_percent) == ("", 0.0)
    assert tr.without_canary(cleared, agent=AGENT, actor="a", now=8.0) is cleared
    with pytest.raises(InvalidRequest):
        tr.with_canary(ROUTE, agent=AGENT, release="r1", percent=5, actor="a", now=1.0)


@pytest.mark.parametrize("state", ["running", "paused"])
def test_an_active_rollout_refuses_canary_and_switch(state: str) -> None:
    rollout = Rollout(release="r3", steps=(10.0,), interval_s=60.0, state=state)  # type: ignore[arg-type]
    route = Route(agent=AGENT, stable="r1", previous_stable="r0", canary="r3", rollout=rollout)
    edits: list[Callable[[], Route]] = [
        lambda: tr.with_canary(route, agent=AGENT, release="r2", percent=5, actor="a", now=1),
        lambda: tr.without_canary(route, agent=AGENT, actor="a", now=1),
        lambda: tr.switched(route, agent=AGENT, release="r2", actor="a", now=1),
        lambda: tr.switched_back(route, agent=AGENT, actor="a", now=1),
    ]
    for edit in edits:
        with pytest.raises(RolloutActive, match="abort or finish it first"):
            edit()


def test_a_finished_rollout_does_not_block() -> None:
    done = Rollout(release="r3", steps=(10.0,), interval_s=60.0, state="done")
    route = Route(agent=AGENT, stable="r3", previous_stable="r1", rollout=done)
    assert tr.switched_back(route, agent=AGENT, actor="a", now=1).stable == "r1"


def test_switch_and_back() -> None:
    shadow = Shadow(release="r2", percent=5, since=1.0)
    route = Route(agent=AGENT, stable="r1", canary="r3", canary_percent=10, shadow=shadow)
    new = tr.switched(route, agent=AGENT, release="r2", actor="a", now=2.0)
    assert (new.stable, new.previous_stable, new.canary, new.canary_percent, new.shadow) == (
        "r2", "r1", "", 0.0, None,
    )  # fmt: skip
    other = Shadow(release="r4", percent=5, since=1.0)
    kept = tr.switched(
        Route(agent=AGENT, stable="r1", shadow=other), agent=AGENT, release="r2", actor="a", now=2
    )
    assert kept.shadow == other
    back = tr.switched_back(new, agent=AGENT, actor="b", now=3.0)
    assert (back.stable, back.previous_stable) == ("r1", "r2")
    with pytest.raises(InvalidRequest):
        tr.switched(new, agent=AGENT, release="r2", actor="a", now=4.0)
    with pytest.raises(NoPreviousRelease):
        tr.switched_back(Route(agent=AGENT, stable="r1"), agent=AGENT, actor="a", now=1)


def test_shadow_edits() -> None:
    shadow = Shadow(release="r2", percent=10, since=9.0)
    route = tr.with_shadow(ROUTE, agent=AGENT, shadow=shadow, actor="a")
    assert (route.shadow, route.updated_at) == (shadow, 9.0)
    with pytest.raises(InvalidRequest):
        tr.with_shadow(
            ROUTE, agent=AGENT, shadow=Shadow(release="r1", percent=1, since=1), actor="a"
        )
    assert tr.without_shadow(route, agent=AGENT, actor="a", now=10).shadow is None
    assert tr.without_shadow(ROUTE, agent=AGENT, actor="a", now=10) is ROUTE


def pin(session: str, release: str = "r1", agent: str = AGENT) -> Pin:
    return Pin(agent=agent, session=session, release=release, pinned_at=1.0, revision=1)


def test_migration_selection_by_percent_is_deterministic_and_proportional() -> None:
    pins = [pin(f"sess-{i}") for i in range(10_000)]
    half = Selection(agent=AGENT, source="r1", target="r2", percent=50)
    chosen = [p.session for p in pins if half.wants(p)]
    assert chosen == [p.session for p in pins if half.wants(p)]
    assert abs(len(chosen) - 5_000) < 200  # 4 standard deviations
    tenth = Selection(agent=AGENT, source="r1", target="r2", percent=10)
    small = {p.session for p in pins if tenth.wants(p)}
    assert abs(len(small) - 1_000) < 120
    assert small <= set(chosen)  # buckets below 10% are below 50% too
    every = Selection(agent=AGENT, source="r1", target="r2", percent=100)
    assert all(every.wants(p) for p in pins)
    assert all(bucketing.selected(bucketing.MIGRATE, AGENT, s, 10) for s in small)


def test_migration_selection_filters() -> None:
    one = Selection(agent=AGENT, source="r1", target="r2", session="b")
    assert [one.wants(pin(s)) for s in ("a", "b")] == [False, True]
    assert not one.wants(pin("b", release="r3"))
    assert not one.wants(pin("b", agent="other"))
    anything = Selection(agent=AGENT, target="r2")  # switch --migrate
    assert [anything.wants(pin("a", r)) for r in ("r1", "r2", "r3")] == [True, False, True]
