"""configsvc killed in the middle of a rollout and restarted, with a second replica running.

Two replicas share the rollout controller's election. The test watches the environment's whole
keyspace from before the rollout starts, so it sees every route write, every audit key and every
change of the election key in revision order. It SIGKILLs the leading replica twice at moments
it is stepping -- just after it committed a step (its audit entry may still be pending), and
just as the next step falls due -- and restarts each killed replica. Then: every step happened
exactly once and lasted its interval, none was lost (route writes and audit entries agree), no
audit entry was left pending, leadership passed only through lease expiry to a live replica,
and a restarted replica never stepped while another one led.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from configsvc.leader.election import ROLLOUT_ELECTION
from holdfast.keyspace import Keyspace, Rollout, Route
from holdfast.store import Change
from holdfast.store.etcd import EtcdStore
from holdfast_devtools import procs
from holdfast_devtools.etcd_local import EtcdNode
from tests.etcd.spine_stack import AGENT, Stack, start_stack

pytestmark = pytest.mark.etcd

FAST = ("--rollout-tick", "0.1", "--leader-ttl", "2")
STEPS = (10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0)
INTERVAL_S = 1.0


@dataclass
class KeyspaceLog:
    """Every change under the environment's prefix, in revision order, as the watch saw it."""

    keyspace: Keyspace
    changes: list[Change] = field(default_factory=list)
    updated: asyncio.Event = field(default_factory=asyncio.Event)

    def of(self, key: str) -> list[Change]:
        return [c for c in self.changes if c.key == key]

    def routes(self) -> list[tuple[int, Route]]:
        puts = [c for c in self.of(self.keyspace.route(AGENT)) if c.kind == "put"]
        return [(c.mod_revision, Route.decode(c.value)) for c in puts]

    def holder(self) -> str | None:
        events = self.of(self.keyspace.election(ROLLOUT_ELECTION))
        if not events or events[-1].kind == "delete":
            return None
        return events[-1].value.decode()

    async def until(self, check: Any, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            self.updated.clear()  # before the check: an update landing meanwhile is not missed
            if found := check():
                return found
            left = deadline - time.monotonic()
            assert left > 0, "timed out waiting on the keyspace"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.updated.wait(), left)


async def record(store: EtcdStore, log: KeyspaceLog, start: int) -> None:
    async for batch in store.watch(log.keyspace.prefix, start):
        log.changes.extend(batch)
        log.updated.set()


@pytest.fixture
async def keyspace_log(etcd_node: EtcdNode, etcd_env: str) -> AsyncIterator[KeyspaceLog]:
    store = EtcdStore([etcd_node.client_url])
    await store.connect()
    log = KeyspaceLog(Keyspace(etcd_env))
    watcher = asyncio.ensure_future(record(store, log, await store.revision() + 1))
    try:
        yield log
    finally:
        watcher.cancel()
        await asyncio.wait({watcher})
        await store.close()


def pid_in(identity: str | None, proc: procs.ManagedProcess) -> bool:
    return identity is not None and proc.proc is not None and f"-{proc.proc.pid}-" in identity


def owner(replicas: list[procs.ManagedProcess], identity: str | None) -> procs.ManagedProcess:
    """The replica whose process holds ``identity`` (identities carry the pid)."""
    return next(p for p in replicas if pid_in(identity, p))


def latest_step(log: KeyspaceLog) -> int | None:
    routes = log.routes()
    rollout = routes[-1][1].rollout if routes else None
    return rollout.step if rollout is not None and rollout.state == "running" else None


def steps_since(log: KeyspaceLog, holder: str) -> Rollout | None:
    """The first step committed after ``holder`` took the election key."""
    election = [c for c in log.of(log.keyspace.election(ROLLOUT_ELECTION)) if c.kind == "put"]
    since = next(c.mod_revision for c in election if c.value.decode() == holder)
    for revision, route in log.routes():
        if revision > since and route.rollout is not None and route.rollout.state == "running":
            return route.rollout
    return None


async def test_leader_killed_mid_step_and_restarted_steps_exactly_once(
    tmp_path: Path, etcd_node: EtcdNode, etcd_env: str, keyspace_log: KeyspaceLog
) -> None:
    log = keyspace_log
    stack: Stack = start_stack(tmp_path, etcd_env, [etcd_node.client_url], svc_args=FAST)
    replicas = [stack.svc]
    try:
        second = procs.configsvc(
            tmp_path / "logs-b", [etcd_node.client_url], etcd_env, stack.token, *FAST
        )
        replicas.append(second)
        starting = asyncio.ensure_future(asyncio.to_thread(second.start))

        def set_up() -> None:
            stack.create_releases(("r1", "model-one"), ("r2", "model-two"))
            stack.set_stable("r1")

        await asyncio.gather(asyncio.to_thread(set_up), starting)
        first = await log.until(log.holder)
        steps = ",".join(f"{s:g}" for s in STEPS)
        await asyncio.to_thread(
            stack.ctl, "rollout", "start", AGENT, "r2", "--steps", steps, "--interval", "1s"
        )

        # Kill 1: the leader, the moment its first step is committed (its audit entry may
        # still be pending). It is restarted at once; whichever replica wins the election once
        # the dead one's lease expires -- the other one, or the restarted one -- carries on.
        await log.until(lambda: latest_step(log) == 1)
        leader = owner(replicas, log.holder())
        assert pid_in(first, leader)
        leader.kill()
        restarts = [asyncio.ensure_future(asyncio.to_thread(leader.start))]
        second_holder = await log.until(lambda: log.holder() not in (None, first) and log.holder())

        # Kill 2: the new leader, just before a step of its own falls due (a late wake-up on a
        # busy machine aims at the next step).
        current = await log.until(lambda: steps_since(log, second_holder))
        while True:
            due = current.step_started_at + current.interval_s
            await asyncio.sleep(max(0.0, due - time.time() - 0.05))
            if latest_step(log) == current.step:
                break
            assert current.step < len(STEPS) - 3, "never ahead of the leader's next step"
            current = log.routes()[-1][1].rollout
            assert current is not None
        assert log.holder() == second_holder, "a replica took over a live lease"
        leader = owner(replicas, second_holder)
        leader.kill()
        restarts.append(asyncio.ensure_future(asyncio.to_thread(leader.start)))
        await log.until(lambda: log.holder() not in (None, second_holder))
        await asyncio.gather(*restarts)

        done = await log.until(
            lambda: any(r.rollout and r.rollout.state == "done" for _, r in log.routes())
        )
        assert done
        await asyncio.sleep(2 * INTERVAL_S)  # room for a double step to show itself
        # Before anything reads the history (which finalizes too): the restarts finalized
        # whatever a killed replica left pending.
        store = EtcdStore([etcd_node.client_url])
        await store.connect()
        try:
            _, pending = await store.list_prefix(f"{log.keyspace.kind_prefix('audit')}pending/")
        finally:
            await store.close()
        assert pending == []
        history = json.loads(
            (
                await asyncio.to_thread(
                    stack.ctl, "--json", "history", "--agent", AGENT, "--limit", "200"
                )
            ).stdout
        )
    finally:
        for proc in replicas:
            proc.stop()
        stack.stop()

    routes = log.routes()
    started = next(i for i, (_, r) in enumerate(routes) if r.rollout and r.rollout.release == "r2")
    walk = routes[started:]
    # every step once, in order, then the promotion; nothing lost, nothing doubled
    assert [r.canary_percent for _, r in walk] == [*STEPS, 0.0]
    assert walk[-1][1].stable == "r2" and walk[-1][1].rollout.state == "done"  # type: ignore[union-attr]
    assert all(r.updated_by == "rollout-controller" for _, r in walk[1:])
    starts = [r.rollout.step_started_at for _, r in walk[:-1]]  # type: ignore[union-attr]
    assert all(b - a >= INTERVAL_S - 0.01 for a, b in itertools.pairwise(starts)), starts
    # the audit trail names exactly those writes
    advances = [e for e in history["entries"] if e["action"] == "rollout.advance"]
    assert sorted(e["revision"] for e in advances) == [rev for rev, _ in walk[1:]]
    assert sorted(e["after"]["canary_percent"] for e in advances) == sorted([*STEPS[1:], 0.0])
    # leadership moved only when a lease expired, to the replica that was alive
    election = log.of(log.keyspace.election(ROLLOUT_ELECTION))
    holders = [c.value.decode() for c in election if c.kind == "put"]
    # three leaders, one per kill; nobody displaced a live leader (a replica restarted while
    # another one led stayed a follower)
    assert len(holders) == 3 and holders[:2] == [first, second_holder], holders
    assert all(a.kind == "delete" for a, b in itertools.pairwise(election) if b.kind == "put")
    # each advance was committed by the replica holding the election key at that revision
    for rev, _ in walk[1:]:
        before = [c for c in election if c.mod_revision < rev]
        assert before and before[-1].kind == "put", rev
