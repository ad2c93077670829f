"""configsvc's fleet view over a real etcd: the health/ watch, what it refuses, and the rollout
controller acting on the gate (pause for want of data, audited; resume; pause again only after
a deadline's worth of running time)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from configsvc.health.evaluations import GateRecorder, GateRecords
from configsvc.health.fleet import FleetHealth
from configsvc.health.gate import PolicyGate
from configsvc.health.replicas import ReplicaSet
from configsvc.http.payloads import HistoryQuery
from configsvc.leader.election import Election
from configsvc.releases.ops import ConfigService
from configsvc.rollouts.controller import RolloutController
from configsvc.rollouts.ops import RolloutOps, StartRollout
from holdfast.health_owners import owners
from holdfast.keyspace import HealthSnapshot, Keyspace, Release, Route, ShadowStats
from holdfast.keyspace.policy import HealthPolicy
from holdfast.keyspace.session_spread import SessionSpread
from holdfast.store.etcd import EtcdStore
from tests.unit.test_health_gate import sig

pytestmark = pytest.mark.etcd
AGENT = "support"


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def snapshot(sidecar: str, at: float, requests: int) -> HealthSnapshot:
    return HealthSnapshot(
        sidecar_id=sidecar,
        agent=AGENT,
        at=at,
        started_at=0.0,
        config_revision=1,
        signals=(sig("r1", requests), sig("r2", requests, category="billing")),
        sessions=(SessionSpread(release="r1", sessions=3, tokens=(1, 2, 0, 0, 0, 0)),),
        shadow=(
            ShadowStats(
                primary="r1", shadow="r2", epoch=1.0, samples=4, similarity_sum=3.0,
                tool_agree=1, tool_samples=2,
            ),
        ),
    )  # fmt: skip


async def test_the_fleet_view_follows_the_watch_and_refuses_what_is_not_a_sidecars_own(
    store: EtcdStore, etcd_env: str
) -> None:
    ks = Keyspace(etcd_env)
    now = time.time()
    fleet = FleetHealth(store, ks)
    await fleet.start()
    try:
        await store.put(ks.health("a"), snapshot("a", now, 10).encode())
        await store.put(ks.health("b"), snapshot("b", now, 5).encode())
        await store.put(ks.health("junk"), b"\x00not msgpack")
        # a key that names another sidecar must not write into (or delete) that one's data
        await store.put(ks.health("c"), snapshot("a", now + 1, 999).encode())
        await until(lambda: {k.rsplit("/", 1)[-1] for k in fleet._unreadable} == {"junk", "c"})
        assert fleet.windows.sidecars(AGENT) == 2
        body = fleet.status(AGENT, "r1", "r2")
        r1, r2 = body["releases"]["r1"], body["releases"]["r2"]
        assert r1["windows"]["since_start"]["requests"] == 15
        assert body["sidecars"] == 2 and body["etcd_connected"] is True
        assert 0 <= body["data_age_s"] < 5
        assert r1["session_spread"]["sessions"] == 6 and r1["sessions"] == 6
        assert r1["session_spread"]["tokens_buckets"]["le_1000"] == 4
        assert r2["shadow_samples"] == 8 and r2["shadow_similarity"] == 0.75
        assert r2["shadow_tool_agreement"] == 0.5
        assert r2["shadow"]["1m"]["samples"] == 8
        assert set(r2["categories"]) == {"billing"}
        # deleting the impostor's key leaves a's data alone; deleting a's retires it
        await store.delete(ks.health("c"))
        await store.delete(ks.health("a"))
        await until(lambda: fleet.windows.sidecars(AGENT) == 1)
        body = fleet.status(AGENT, "r1", "r2")
        assert body["releases"]["r1"]["windows"]["since_start"]["requests"] == 15
        assert body["releases"]["r1"]["sessions"] == 3  # live sidecars' tracked sessions only
    finally:
        await fleet.close()


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_controller_pauses_for_want_of_data_audits_it_and_a_resume_gets_a_fresh_deadline(
    store: EtcdStore, etcd_env: str
) -> None:
    ks = Keyspace(etcd_env)
    clock = Clock()
    service = ConfigService(store, ks, clock=clock)
    for name in ("r1", "r2"):
        release = Release(agent=AGENT, name=name, model=f"m-{name}", base_url="http://h/v1")
        await store.put(ks.release(AGENT, name), release.encode())
    await store.put(ks.route(AGENT), Route(agent=AGENT, stable="r1", updated_at=1.0).encode())
    ops = RolloutOps(service)
    fleet = FleetHealth(store, ks, clock=clock)
    controller = RolloutController(
        ops, Election(store, ks, "test", ttl=5), tick=0.1, gate=PolicyGate(fleet)
    )
    policy = HealthPolicy(min_samples=20, inconclusive_after_s=30.0)
    await ops.start(AGENT, StartRollout(release="r2", steps=(10.0,), interval_s=3600.0,
                                        policy=policy), "ops")  # fmt: skip

    async def state() -> str:
        route = (await service.get_route(AGENT)).record
        assert route.rollout is not None
        return route.rollout.state

    await controller.run_once()  # no data at all: inconclusive, the clock starts
    clock.now += 31
    await controller.run_once()
    assert await state() == "paused"
    _, history = await service.history(HistoryQuery(agent=AGENT))
    entries = [h.to_json() for h in history]
    pause: dict[str, Any] = next(e for e in entries if e["action"] == "rollout.pause")
    assert pause["actor"] == "rollout-controller"
    assert pause["reason"].startswith("health gate inconclusive for 31s")
    assert pause["extra"]["health_gate"]["verdict"] == "inconclusive"
    # an hour later an operator resumes: the gate waits a whole deadline again
    clock.now += 3600
    await controller.run_once()  # the gate sees the pause (its clock stands still)
    await ops.act(AGENT, "resume", "ops", "looked at it")
    for _ in range(3):
        await controller.run_once()
        clock.now += 9
    assert await state() == "running"
    clock.now += 5
    await controller.run_once()
    assert await state() == "paused"


async def test_a_leader_that_holds_no_health_of_the_agent_judges_by_the_owners_records(
    store: EtcdStore, etcd_env: str
) -> None:
    """Three replicas share the agents (two owners each): the agent's first owner takes the
    beats and records its evaluations in gates/<agent>; a leader that is not an owner judges by
    them, one failing evaluation per new data version, and aborts as it would locally."""
    ks = Keyspace(etcd_env)
    clock = Clock()
    names = ("rep-a", "rep-b", "rep-c")
    first, second = owners(AGENT, names)
    (outsider,) = set(names) - {first, second}
    sets = {n: ReplicaSet(store, ks, replica=n, ttl=5) for n in names}
    for i, replica in enumerate(sets.values()):
        await replica.start(f"http://127.0.0.1:{9 + i}")  # never called here
    service = ConfigService(store, ks, clock=clock)
    for name in ("r1", "r2"):
        release = Release(agent=AGENT, name=name, model=f"m-{name}", base_url="http://h/v1")
        await store.put(ks.release(AGENT, name), release.encode())
    await store.put(ks.route(AGENT), Route(agent=AGENT, stable="r1", updated_at=1.0).encode())
    ops = RolloutOps(service)
    policy = HealthPolicy(max_error_rate_delta=0.1, min_samples=20, fails_to_abort=2)
    await ops.start(AGENT, StartRollout(release="r2", steps=(50.0,), interval_s=3600.0,
                                        policy=policy), "ops")  # fmt: skip
    owner_fleet = FleetHealth(store, ks, clock=clock)
    owner_records = GateRecords(store, ks, sets[first], clock=clock)
    recorder = GateRecorder(
        store, ks, owner_records, PolicyGate(owner_fleet, owner_records), tick=0.1
    )
    leader_records = GateRecords(store, ks, sets[outsider], clock=clock)
    leader = PolicyGate(FleetHealth(store, ks, clock=clock), leader_records)
    controller = RolloutController(ops, Election(store, ks, "test", ttl=5), tick=0.1, gate=leader)
    await owner_records.start()
    await leader_records.start()
    try:
        await until(lambda: all(len(r.members) == 3 for r in sets.values()))
        assert not sets[outsider].holds(AGENT) and sets[first].first_owner(AGENT) == first
        await until(lambda: bool(owner_records.routes()))
        rollout = (await service.get_route(AGENT)).record.rollout
        assert rollout is not None

        async def beat(at: float, n: int) -> None:
            # the owner takes beats (POST /v1/health/beats); the canary fails half its requests
            owner_fleet.ingest(snapshot_of("s1", rollout.started_at + at, n))
            assert await recorder.run_once() == 1
            await until(lambda: leader_records.recorded(AGENT, rollout) is not None
                        and leader_records.recorded(AGENT, rollout).data_version  # type: ignore[union-attr]
                        == owner_fleet.windows.data_version(AGENT, "r2"))  # fmt: skip

        clock.now = rollout.started_at + 5
        await beat(1.0, 10)  # the first beat since the rollout started: its baseline
        assert (await leader.judge(AGENT, rollout, "r1")).reason.startswith("inconclusive")
        await beat(2.0, 50)
        decision = await leader.judge(AGENT, rollout, "r1")
        assert (decision.action, decision.reason) == ("hold", "failing (1/2)")
        assert await recorder.run_once() == 0  # nothing new: nothing written, no second fail
        assert (await leader.judge(AGENT, rollout, "r1")).reason == "failing (1/2)"
        await beat(3.0, 90)
        assert await controller.run_once() == 1
        route = (await service.get_route(AGENT)).record
        assert route.rollout is not None and route.rollout.state == "aborted"
        assert route.rollout.reason.startswith("health gate: 2 failing evaluations")
        report = leader.report(AGENT, rollout, "r1")
        assert report is not None and report["verdict"] == "fail"
    finally:
        await owner_records.close()
        await leader_records.close()
        for replica in sets.values():
            await replica.close()


def snapshot_of(sidecar: str, at: float, requests: int) -> HealthSnapshot:
    return HealthSnapshot(
        sidecar_id=sidecar, agent=AGENT, at=at, started_at=0.0, config_revision=1,
        signals=(sig("r1", requests), sig("r2", requests, errors=requests // 2)),
    )  # fmt: skip
