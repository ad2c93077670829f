"""What a fleet costs, the pure parts: key ranges and what the adapter counts, the sidecar's
watch, health owners, the sidecar's view of configsvc's replicas, the sidecar token role, the
new records, late and out-of-order beats, and agents' quota slices."""

from __future__ import annotations

import json
import string
from typing import Any

import pytest

from configsvc.budgets.controller import _slice_moved
from configsvc.errors import Forbidden
from configsvc.health.windows import FleetWindows
from configsvc.http.access import Role, also_accepted, required_role
from configsvc.http.auth import Authorizer
from configsvc.http.tokens import TokensFileError, parse_tokens
from holdfast.health_owners import HEALTH_COPIES, owners
from holdfast.keyspace import Keyspace, RecordError
from holdfast.keyspace.gate import GateEvaluation
from holdfast.keyspace.keys import AGENT_SCOPED, KeyError_
from holdfast.keyspace.member import Member
from holdfast.keyspace.quota import DEPARTED, OTHERS, Quotas, SpendReport, agent_part
from holdfast.store import Change, KeyRange, KeyValue
from holdfast.store.types import MAX_TRAFFIC_DIRS, OTHER_DIRS, Traffic, check_disjoint, key_dir
from sidecar.config import CONFIG_KINDS, sidecar_ranges
from sidecar.config.ranges import AGENT_KINDS
from sidecar.ops.beats import FALLBACK_AFTER_S, Replicas
from tests.unit.test_access_tokens import bearer, line
from tests.unit.test_health_gate import requests, sig, snap

KS = Keyspace("dev")


# -- ranges and the adapter's counts -------------------------------------------------------------


def test_an_exact_range_is_one_key_and_overlaps_are_refused() -> None:
    route = KeyRange.exact("/holdfast/dev/routes/a")
    assert route.contains("/holdfast/dev/routes/a")
    assert not route.contains("/holdfast/dev/routes/ab")
    assert KeyRange.prefix("/holdfast/dev/routes/").overlaps(route)
    assert not KeyRange.prefix("/holdfast/dev/pins/a/").overlaps(KeyRange.prefix("/x/"))
    with pytest.raises(ValueError, match="overlap"):
        check_disjoint([KeyRange.prefix("/a/"), KeyRange.prefix("/a/b/")])
    with pytest.raises(ValueError, match="needs a key"):
        KeyRange.exact("")


def test_traffic_is_counted_per_key_directory_and_stays_bounded() -> None:
    traffic = Traffic()
    traffic.key("/holdfast/dev/pins/a/s1", 10)
    traffic.key("/holdfast/dev/pins/a/s2", 10)
    traffic.response(100)
    assert traffic.by_dir == {
        "/holdfast/dev/pins/a/": [2, 2 * (len("/holdfast/dev/pins/a/s1") + 10)]
    }
    assert (traffic.keys, traffic.bytes, traffic.responses) == (2, 100, 1)
    for i in range(MAX_TRAFFIC_DIRS + 10):
        traffic.key(f"/d{i}/k", 1)
    assert len(traffic.by_dir) == MAX_TRAFFIC_DIRS + 1 and OTHER_DIRS in traffic.by_dir
    assert key_dir("/holdfast/dev/routes/a") == "/holdfast/dev/routes/"
    assert json.loads(json.dumps(traffic.to_json()))["keys"] == traffic.keys


def test_a_sidecar_watches_its_own_agent_and_the_environment_wide_kinds_only() -> None:
    ranges = sidecar_ranges(KS, "support", CONFIG_KINDS)
    check_disjoint(ranges)
    shown = {str(r) for r in ranges}
    assert shown == {
        *(f"/holdfast/dev/{k}/*" for k in (*CONFIG_KINDS, "members")),
        "/holdfast/dev/pins/support/*",
        "/holdfast/dev/releases/support/*",
        "/holdfast/dev/responses/support/*",
        "/holdfast/dev/routes/support",
    }
    for other in ("health", "spend", "outcomes", "quotas", "audit", "gates", "election", "drift"):
        assert not any(r.contains(KS.kind_prefix(other) + "x") for r in ranges), other
    assert not any(r.contains(KS.pin("supportx", "s")) for r in ranges)  # a longer agent name
    assert not any(r.contains(KS.state_owner("other", "resp_1")) for r in ranges)
    assert set(AGENT_KINDS) <= AGENT_SCOPED and "slices" in AGENT_SCOPED
    with pytest.raises(KeyError_):
        KS.agent_prefix("flags", "support")  # not agent-scoped


# -- health owners ------------------------------------------------------------------------------


def test_owners_are_two_stable_replicas_and_a_joiner_moves_only_what_it_takes() -> None:
    three, four = ["a", "b", "c"], ["a", "b", "c", "d"]
    agents = [f"agent-{c}{i}" for c in string.ascii_lowercase for i in range(8)]
    assert owners("x", []) == [] and owners("x", ["a"]) == ["a"]
    for agent in agents:
        before, after = owners(agent, three), owners(agent, four)
        assert len(before) == HEALTH_COPIES == len(set(before))
        assert owners(agent, reversed(three)) == before  # the same on every sidecar
        assert after == before or "d" in after  # only agents the joiner takes move
        gone = owners(agent, ["a", "b"])
        if "c" not in before:
            assert gone == before  # a replica leaving moves only its own agents
    firsts = {owners(a, four)[0] for a in agents}
    assert firsts == set(four)  # every replica owns some agents


def member(replica: str, port: int = 1) -> KeyValue:
    m = Member(replica=replica, url=f"http://127.0.0.1:{port}", started_at=1.0)
    key = KS.member(replica)
    return KeyValue(key, m.encode(), 1, 1, 1)


def test_a_sidecar_knows_the_replicas_and_keeps_to_http_once_it_saw_one() -> None:
    now = [1000.0]
    replicas = Replicas(KS, "support", clock=lambda: now[0])
    assert replicas.use_etcd()  # none seen: etcd, as before replicas took beats
    kvs = {kv.key: kv for kv in (member("a"), member("b"), member("c"))}
    forged = KeyValue(KS.member("d"), member("e").value, 1, 1, 1)  # a record naming another
    replicas.apply_reset({**kvs, forged.key: forged})
    assert len(replicas) == 3 and replicas.rejected == 1
    assert [m.replica for m in replicas.owners()] == owners("support", ["a", "b", "c"])
    assert not replicas.use_etcd()
    replicas.apply_changes([Change("delete", k, b"", 2) for k in kvs])
    assert replicas.owners() == [] and not replicas.use_etcd()  # a short outage: no storm
    now[0] += FALLBACK_AFTER_S
    assert replicas.use_etcd()  # gone for long: back to etcd
    replicas.apply_changes([Change("put", member("a").key, member("a").value, 3)])
    assert not replicas.use_etcd()


# -- the sidecar token role ---------------------------------------------------------------------


def test_a_sidecar_token_may_send_beats_for_its_agent_and_nothing_else() -> None:
    text = "\n".join(
        [
            line("vic", "viewer", "tv"),
            line("olga", "operator", "to"),
            json.dumps(json.loads(line("fleet", "sidecar", "ts")) | {"agent": "support"}),
            line("any", "sidecar", "ta"),
        ]
    )
    auth = Authorizer("", parse_tokens(text))
    beats = ("POST", "/v1/health/beats")
    need, also = required_role(*beats), also_accepted(*beats)
    assert (need, also) == (Role.OPERATOR, frozenset({Role.SIDECAR}))
    who = auth.check(mutation=True, remote="10.0.0.1", headers=bearer("ts"), required=need,
                     also=also)  # fmt: skip
    assert (who.role, who.agent) == (Role.SIDECAR, "support")
    assert auth.check(mutation=True, remote="10.0.0.1", headers=bearer("ta"), required=need,
                      also=also).agent == ""  # fmt: skip
    assert auth.check(mutation=True, remote="10.0.0.1", headers=bearer("to"), required=need,
                      also=also).role == Role.OPERATOR  # fmt: skip
    with pytest.raises(Forbidden, match="viewer"):  # a beat can move the gate: not for viewers
        auth.check(mutation=True, remote="10.0.0.1", headers=bearer("tv"), required=need,
                   also=also)  # fmt: skip
    with pytest.raises(Forbidden, match="sidecar"):  # nor may a sidecar token read
        auth.check(mutation=False, remote="10.0.0.1", headers=bearer("ts"))
    stable = required_role("PUT", "/v1/agents/{agent}/route/stable")
    with pytest.raises(Forbidden, match="sidecar"):
        auth.check(mutation=True, remote="10.0.0.1", headers=bearer("ts"), required=stable)


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"role": "viewer", "agent": "support"}, "only a token of role sidecar"),
        ({"role": "sidecar", "agent": "Not A Name"}, "agent must be an agent name"),
        ({"role": "sidecar", "agent": 7}, "agent must be an agent name"),
    ],
)
def test_tokens_file_binds_agents_to_sidecar_tokens_only(
    extra: dict[str, object], error: str
) -> None:
    entry = json.loads(line("x", "sidecar", "t")) | extra
    with pytest.raises(TokensFileError, match=error):
        parse_tokens(json.dumps(entry))


# -- records ------------------------------------------------------------------------------------


def test_member_and_gate_records_round_trip_and_refuse_what_they_must() -> None:
    m = Member(replica="vm-1-abc", url="http://10.0.0.5:8700/", started_at=3.0)
    assert Member.decode(m.encode()) == m and m.url == "http://10.0.0.5:8700"
    for replica, url in (("bad id!", "http://h:1"), ("r", "ftp://x"), ("r", "http://h:1?q=1")):
        with pytest.raises(RecordError):
            Member(replica=replica, url=url, started_at=0.0)
    check = {"gate": "max_error_rate_delta", "scope": "overall", "verdict": "fail",
             "canary": 0.5, "stable": 0.0, "limit": 0.1, "detail": "bad"}  # fmt: skip
    ev = GateEvaluation(agent="support", release="r2", started_at=5.0, replica="vm-1",
                        data_version=3, at=9.0, verdict="fail", checks=(check,))  # fmt: skip
    assert GateEvaluation.decode(ev.encode()) == ev and ev.rollout_key == ("r2", 5.0)
    for bad_check in ({"verdict": "maybe"}, {"canary": float("nan")}, {"limit": None}):
        with pytest.raises(RecordError):
            GateEvaluation(**(ev.public() | {"checks": ({**check, **bad_check},)}))
    with pytest.raises(RecordError):
        GateEvaluation(**(ev.public() | {"verdict": "great"}))


def test_an_agents_quota_slice_holds_its_own_holders_only() -> None:
    q = Quotas(scope="global", window="d1", limit=1000, grants={"a.1.x": 300, "b.1.y": 200},
               used=120, share=100, reported={"a.1.x": (10, 0)})  # fmt: skip
    part = agent_part(q, {"a.1.x"})
    # Another agent's holders are one OTHERS entry: never by id, never one by one.
    assert part.grants == {"a.1.x": 300, OTHERS: 200} and "b.1.y" not in part.grants
    assert part.reported == {} and part.used == 120
    assert Quotas.decode(part.encode()) == part
    assert not _slice_moved(part, agent_part(q, {"a.1.x"}))
    used_a_bit = Quotas(**(part.public() | {"used": 125, "tails": {}, "reported": {}}))
    assert not _slice_moved(part, used_a_bit)  # less than 1% of the limit: not rewritten
    assert _slice_moved(part, Quotas(**(part.public() | {"used": 131, "tails": {},
                                                          "reported": {}})))  # fmt: skip
    regrant = Quotas(**(part.public() | {"grants": {"a.1.x": 301}, "tails": {}, "reported": {}}))
    assert _slice_moved(part, regrant)
    assert "b.1.y" not in agent_part(q, {"a.1.x", "zz.2.y"}).grants
    report = SpendReport(scope="global", holder="a.1.x", window="d1", used=1, agent="a")
    assert SpendReport.decode(report.encode()).agent == "a"
    with pytest.raises(RecordError):
        SpendReport(scope="global", holder="a.1.x", window="d1", used=1, agent="Bad Agent")


# -- beats from two sides -----------------------------------------------------------------------


def test_an_older_snapshot_from_the_other_side_is_not_a_restart() -> None:
    w = FleetWindows(min_spacing_s=0.0)
    w.observe(snap("a", 100.0, sig("r1", 10), started=1.0))  # presence, from etcd
    w.observe(snap("a", 110.0, sig("r1", 50), started=1.0))  # a beat, over HTTP
    w.observe(snap("a", 105.0, sig("r1", 30), started=1.0))  # the etcd value, arriving late
    assert w.sidecars("support") == 1
    assert requests(w.since_start("support"), "r1") == 50  # not 50 + 30


def test_a_beat_after_the_presence_key_went_keeps_the_sidecar_retired() -> None:
    w = FleetWindows(min_spacing_s=0.0)
    w.observe(snap("a", 100.0, sig("r1", 10), started=1.0))
    w.gone("a")  # its presence key was revoked ...
    w.observe(snap("a", 101.0, sig("r1", 12), started=1.0))  # ... before its last beat came
    assert w.sidecars("support") == 0
    assert requests(w.since_start("support"), "r1") == 12
    w.prune(10_000.0)
    w.observe(snap("a", 102.0, sig("r1", 12), started=1.0))  # folded: never counted twice
    assert requests(w.since_start("support"), "r1") == 12 and w.sidecars("support") == 0


def test_status_says_when_no_owner_of_the_agents_health_answered() -> None:
    from configsvc.cli.render.health import status

    agent: dict[str, Any] = {
        "agent": "support", "stable": "r1", "canary": None, "canary_percent": 0.0,
        "sidecars": 3, "releases": {}, "canary_vs_stable": None, "rollout": None,
        "health_unreachable": "replica rep-2 at http://10.0.0.2:8700: refused",
    }  # fmt: skip
    text = status({"agents": [agent]})
    assert "health owners unreachable (replica rep-2 at http://10.0.0.2:8700: refused)" in text
    assert "unreachable" not in status({"agents": [agent | {"health_unreachable": None}]})


def test_an_agents_slice_carries_demand_as_the_keeper_needs_it() -> None:
    """Slices follow demand through the agent's part: its own waiting holders exactly (a top-up
    or a new waiter rewrites it, which wakes the waiting sidecar), the others' demand as one
    entry whose presence (not size) moves the part, and the settled floor by the used step."""
    q = Quotas(scope="global", window="d1", limit=1000, used=300, reserved=100, share=100,
               grants={"a.1.x": 300, "b.1.y": 200, DEPARTED: 50},
               demand={"a.1.x": 40, "b.1.y": 70, "c.1.z": 5})  # fmt: skip
    part = agent_part(q, {"a.1.x"})
    assert part.demand == {"a.1.x": 40, OTHERS: 75}
    assert part.grants == {"a.1.x": 300, OTHERS: 200}  # departed holders are nobody's slice
    assert part.settled_floor == q.settled_floor == 200
    assert Quotas.decode(part.encode()) == part
    more_elsewhere = agent_part(Quotas(**(q.public() | {"demand": {"a.1.x": 40, "b.1.y": 900}})),
                                {"a.1.x"})  # fmt: skip
    assert not _slice_moved(part, more_elsewhere)  # others' sizes move with every tick
    none_elsewhere = agent_part(Quotas(**(q.public() | {"demand": {"a.1.x": 40}})), {"a.1.x"})
    assert _slice_moved(part, none_elsewhere)  # nobody else waits: idle headroom may stay
    mine_waits_more = agent_part(Quotas(**(q.public() | {"demand": {"a.1.x": 41}})), {"a.1.x"})
    assert _slice_moved(part, mine_waits_more)
    settled = agent_part(Quotas(**(q.public() | {"reserved": 0})), {"a.1.x"})
    assert _slice_moved(part, settled)  # the floor rose by 100 (> 1% of the limit)
