"""The health gate across replicas: evaluations recorded in ``gates/<agent>`` by the replica that
holds the agent's health, for the rollout controller wherever it runs.

``GateRecords`` follows ``gates/`` and ``routes/`` (two ranges of one mirror) on every replica.
``GateRecorder`` runs on every replica too and, for each agent with a gated rollout whose first
health owner is this replica, evaluates the policy on its own windows and writes the outcome
when the canary brought new data (or, unchanged, every ``HEARTBEAT_S`` so that readers see it
is alive). The leader's ``PolicyGate`` judges an agent from its own windows when it holds that
agent's health and from the recorded evaluation otherwise; a record counts only if it judges the
current rollout, comes from the agent's first owner as the leader sees the members, and is not
older than ``STALE_S``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final, Protocol

from configsvc.health.replicas import ReplicaSet
from configsvc.health.verdict import Check, Evaluation
from holdfast.background import BackgroundTask
from holdfast.keyspace import Keyspace, RecordError, Rollout, Route
from holdfast.keyspace.gate import GateEvaluation
from holdfast.logs import get_logger
from holdfast.store import KeyRange, Store, StoreError
from holdfast.store.mirror import MirrorUpdate, RangeMirror

log = get_logger(__name__)

HEARTBEAT_S: Final = 5.0
STALE_S: Final = 30.0


class LocalGate(Protocol):
    def evaluate(self, agent: str, rollout: Rollout, stable: str) -> Evaluation | None: ...
    def data_version(self, agent: str, release: str) -> int: ...


def evaluation_of(record: GateEvaluation) -> Evaluation:
    checks = tuple(
        Check(c["gate"], c["scope"], c["verdict"], c["canary"], c["stable"], c["limit"],
              c["detail"])
        for c in record.checks
    )  # fmt: skip
    return Evaluation(record.verdict, checks)  # type: ignore[arg-type]


class GateRecords:
    """Every agent's route and recorded gate evaluation, as this replica's watch shows them."""

    def __init__(
        self,
        store: Store,
        keyspace: Keyspace,
        replicas: ReplicaSet,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.replicas = replicas
        self.clock = clock
        self._gates = keyspace.kind_prefix("gates")
        self._routes = keyspace.kind_prefix("routes")
        self._mirror = RangeMirror(
            store, [KeyRange.prefix(self._gates), KeyRange.prefix(self._routes)]
        )
        self._mirror.subscribe(self._on_update)
        self._records: dict[str, GateEvaluation] = {}
        self._route_of: dict[str, Route] = {}

    async def start(self) -> None:
        await self._mirror.start()

    async def close(self) -> None:
        await self._mirror.close()

    def _on_update(self, update: MirrorUpdate) -> None:
        keys = update.kvs.keys() if update.reset else {c.key for c in update.changes}
        if update.reset:
            self._records, self._route_of = {}, {}
        for key in keys:
            kv = update.kvs.get(key)
            name = key.rsplit("/", 1)[-1]
            if kv is None:
                book = self._records if key.startswith(self._gates) else self._route_of
                book.pop(name, None)
                continue
            try:
                if key.startswith(self._gates):
                    self._records[name] = GateEvaluation.decode(kv.value)
                else:
                    self._route_of[name] = Route.decode(kv.value)
            except RecordError as exc:
                log.warning("gate_input_unreadable", key=key, error=str(exc))

    def routes(self) -> list[Route]:
        return list(self._route_of.values())

    def holds(self, agent: str) -> bool:
        return self.replicas.holds(agent)

    def recorded(self, agent: str, rollout: Rollout) -> GateEvaluation | None:
        """The evaluation of this rollout by the agent's first owner, if it is current."""
        record = self._records.get(agent)
        if record is None or record.rollout_key != (rollout.release, rollout.started_at):
            return None
        if record.replica != self.replicas.first_owner(agent):
            return None  # a replica that no longer owns the agent (or not yet, as seen here)
        if self.clock() - record.at > STALE_S:
            return None
        return record


class GateRecorder:
    """Records the gate's evaluation of every gated rollout whose agent this replica owns."""

    def __init__(
        self,
        store: Store,
        keyspace: Keyspace,
        records: GateRecords,
        gate: LocalGate,
        *,
        tick: float,
    ) -> None:
        self.store = store
        self.keyspace = keyspace
        self.records = records
        self.gate = gate
        self.tick = tick
        self._written: dict[str, tuple[object, float]] = {}  # agent -> (what, when)
        self._task = BackgroundTask("gate recorder")
        self.writes = 0

    def start(self) -> None:
        self._task.start(self._run)

    async def close(self) -> None:
        await self._task.cancel()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                await self.run_once()
            except StoreError as exc:
                log.warning("gate_record_failed", error=str(exc))
            except Exception:  # a bug must not end the recording for the life of the process
                log.exception("gate_record_crashed")

    async def run_once(self) -> int:
        replicas = self.records.replicas
        now = self.records.clock()
        written = 0
        for route in self.records.routes():
            rollout = route.rollout
            agent = route.agent
            if rollout is None or not rollout.active or rollout.policy is None:
                if self._written.pop(agent, None) is not None:
                    # The rollout is over: its evaluation has nobody left to inform.
                    await self.store.delete(self.keyspace.gate(agent))
                continue
            if replicas.first_owner(agent) != replicas.replica:
                continue
            evaluation = self.gate.evaluate(agent, rollout, route.stable)
            if evaluation is None:
                continue
            version = self.gate.data_version(agent, rollout.release)
            checks = tuple(c.to_json() for c in evaluation.checks)
            what = (rollout.release, rollout.started_at, version, evaluation.verdict, checks)
            last = self._written.get(agent)
            if last is not None and last[0] == what and now - last[1] < HEARTBEAT_S:
                continue
            record = GateEvaluation(
                agent=agent,
                release=rollout.release,
                started_at=rollout.started_at,
                replica=replicas.replica,
                data_version=version,
                at=now,
                verdict=evaluation.verdict,
                checks=checks,
            )
            await self.store.put(self.keyspace.gate(agent), record.encode())
            self._written[agent] = (what, now)
            written += 1
        self.writes += written
        return written
