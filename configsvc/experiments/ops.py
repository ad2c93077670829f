"""A/B experiments in configsvc: start, stop (with a winner), list, show, report.

Starting writes the route (now carrying the experiment, compare-and-swapped against the route
that was checked) and the create-only experiment record with the audit entry in one etcd
transaction; stopping clears the route's experiment, optionally makes the winner's release
stable for new sessions, and marks the record stopped, in one transaction too. An experiment
and a canary, rollout or route flag never split the same agent's new sessions at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any, Final

from configsvc import errors
from configsvc.releases import MAX_CAS_ATTEMPTS, ConfigService, require, store_read
from holdfast.experiments.series import counts_of
from holdfast.experiments.stats import DEFAULT_MIN_SAMPLES, Counts, report
from holdfast.keyspace import AuditEntry, Keyspace, RecordError, Route
from holdfast.keyspace.experiment import Experiment, RouteExperiment, Variant
from holdfast.keyspace.keys import KeyError_
from holdfast.keyspace.outcomes import OutcomeReport
from holdfast.logs import get_logger
from holdfast.store import CasConflict, KeyValue, Put

log = get_logger(__name__)

MAX_LIST: Final = 500


def check_route_free(agent: str, route: Route) -> None:
    """Raise unless nothing else splits the agent's new sessions."""
    if route.experiment is not None:
        raise errors.ExperimentConflict(
            f"agent {agent!r} already runs experiment {route.experiment.name!r}; stop it first"
        )
    if route.rollout is not None and route.rollout.active:
        raise errors.ExperimentConflict(
            f"agent {agent!r} has a rollout of {route.rollout.release!r}; an experiment cannot "
            "split traffic while it runs (finish or abort it first)"
        )
    if route.canary and route.canary_percent > 0:
        raise errors.ExperimentConflict(
            f"agent {agent!r} sends {route.canary_percent:g}% of new sessions to canary "
            f"{route.canary!r}; clear it first (`holdfastctl canary clear`)"
        )
    if route.flag:
        raise errors.ExperimentConflict(
            f"agent {agent!r} routes new sessions by flag {route.flag!r}; clear it first"
        )


def no_experiment(agent: str, route: Route, what: str) -> None:
    """For canary, rollout and switch edits: refused while an experiment assigns sessions."""
    if route.experiment is not None:
        raise errors.ExperimentConflict(
            f"agent {agent!r} runs experiment {route.experiment.name!r}, which owns its "
            f"traffic split; {what} refused: stop it first (`holdfastctl experiment stop`)"
        )


class ExperimentOps:
    def __init__(self, service: ConfigService, *, min_samples: int = DEFAULT_MIN_SAMPLES) -> None:
        self.service = service
        self.keyspace = service.keyspace
        self.min_samples = min_samples

    async def get(self, name: str) -> tuple[Experiment, int]:
        kv = await store_read(self.service.store.get(self.keyspace.experiment(name)))
        if kv is None:
            raise errors.ExperimentNotFound(f"no experiment {name!r}")
        return _decode(kv), kv.mod_revision

    async def list_all(self) -> list[dict[str, Any]]:
        _rev, kvs = await store_read(
            self.service.store.list_prefix(self.keyspace.kind_prefix("experiments"))
        )
        return [_decode(kv).public() for kv in kvs[:MAX_LIST]]

    async def start(
        self,
        name: str,
        *,
        agent: str,
        variants: tuple[Variant, ...],
        metric: str,
        metric_type: str,
        reason: str,
        actor: str,
    ) -> tuple[Experiment, int]:
        for variant in variants:
            await self.service.get_release(agent, variant.release)
        now = self.service.clock()
        try:
            spec = RouteExperiment(
                name=name,
                metric=metric,
                metric_type=metric_type,  # type: ignore[arg-type]
                variants=variants,
                started_at=now,
            )
            record = Experiment(agent=agent, spec=spec, started_by=actor)
        except RecordError as exc:
            raise errors.InvalidRequest(str(exc)) from exc
        key = self.keyspace.experiment(name)
        for _attempt in range(MAX_CAS_ATTEMPTS):
            if await store_read(self.service.store.get(key)) is not None:
                raise errors.ExperimentConflict(
                    f"experiment {name!r} exists already; experiment names are used once"
                )
            current = await self.service.get_route(agent)
            route, route_rev = current.record, current.mod_revision
            check_route_free(agent, route)
            new_route = dataclasses.replace(
                route, experiment=spec, updated_at=now, updated_by=actor
            )
            puts = [
                Put(self.keyspace.route(agent), new_route.encode(), route_rev),
                Put(key, record.encode(), 0),
            ]
            entry = self.service.audit_entry(
                actor, "experiment.start", key, reason, None, record.public(), agent
            )
            try:
                revision = await self._txn(puts, entry)
            except CasConflict:
                continue
            log.info("experiment_started", experiment=name, agent=agent, actor=actor)
            return record, revision
        raise errors.RevisionConflict(f"route of {agent!r} kept changing; nothing was started")

    async def stop(
        self, name: str, *, winner: str, reason: str, actor: str
    ) -> tuple[Experiment, Route, int]:
        key = self.keyspace.experiment(name)
        for _attempt in range(MAX_CAS_ATTEMPTS):
            record, record_rev = await self.get(name)
            if record.state != "running":
                raise errors.ExperimentConflict(f"experiment {name!r} is stopped already")
            chosen = record.spec.variant_of(winner) if winner else None
            if winner and chosen is None:
                labels = ", ".join(v.label for v in record.spec.variants)
                raise errors.InvalidRequest(
                    f"winner {winner!r:.40} is not a variant of {name!r} ({labels})", param="winner"
                )
            current = await self.service.get_route(record.agent)
            route, route_rev = require(record.agent, current.record), current.mod_revision
            now = self.service.clock()
            changes: dict[str, Any] = {"updated_at": now, "updated_by": actor}
            if route.experiment is not None and route.experiment.name == name:
                changes["experiment"] = None
            if chosen is not None and chosen.release != route.stable:
                changes |= {"stable": chosen.release, "previous_stable": route.stable}
            new_route = dataclasses.replace(route, **changes)
            stopped = dataclasses.replace(
                record,
                state="stopped",
                stopped_at=now,
                stopped_by=actor,
                winner=winner,
                reason=reason,
            )
            puts = [
                Put(self.keyspace.route(record.agent), new_route.encode(), route_rev),
                Put(key, stopped.encode(), record_rev),
            ]
            entry = self.service.audit_entry(
                actor,
                "experiment.stop",
                key,
                reason,
                record.public(),
                stopped.public(),
                record.agent,
            )
            try:
                revision = await self._txn(puts, entry)
            except CasConflict:
                continue
            log.info("experiment_stopped", experiment=name, winner=winner or None, actor=actor)
            return stopped, new_route, revision
        raise errors.RevisionConflict(f"experiment {name!r} kept changing; nothing was stopped")

    async def report(self, name: str) -> dict[str, Any]:
        record, _rev = await self.get(name)
        # outcomes/<sidecar-id>/<experiment>: sidecar first for etcd roles, so read them all
        prefix = self.keyspace.kind_prefix("outcomes")
        _r, kvs = await store_read(self.service.store.list_prefix(prefix))
        mine = [(kv, parts) for kv in kvs if (parts := _outcome_key(self.keyspace, kv))]
        counts, sidecars, unreadable = merge_reports(
            (kv.value for kv, parts in mine if parts[1] == name),
            name,
            record.spec.metric,
            sidecar_ids=[parts[0] for _, parts in mine if parts[1] == name],
        )
        labels = [v.label for v in record.spec.variants]
        stats = report(labels, counts, record.spec.metric_type, min_samples=self.min_samples)
        return {
            "experiment": record.public(),
            "sidecars_reporting": sidecars,
            "snapshots_unreadable": unreadable,
            **stats,
        }

    async def _txn(self, puts: list[Put], entry: AuditEntry) -> int:
        return await self.service.audit.write(puts, entry, check="`holdfastctl experiment show`")


def merge_reports(
    values: Iterable[bytes],
    experiment: str,
    metric: str,
    *,
    sidecar_ids: Sequence[str] | None = None,
) -> tuple[dict[str, Counts], int, int]:
    """Sum the sidecars' outcome reports of one experiment and metric, per variant (pure).

    ``sidecar_ids``, when given, are the ids in the reports' keys, in the same order: a report
    that claims another sidecar than its key is refused (etcd roles guard keys, not values).
    Returns the counts per variant, how many sidecars reported, and how many reports could not
    be read (logged and left out rather than failing the whole report).
    """
    counts: dict[str, Counts] = {}
    sidecars = unreadable = 0
    for i, value in enumerate(values):
        try:
            report = OutcomeReport.decode(value)
            if sidecar_ids is not None and report.sidecar_id != sidecar_ids[i]:
                raise RecordError(f"report of {report.sidecar_id!r:.140} under another's key")
        except RecordError as exc:
            log.warning("outcome_report_unreadable", experiment=experiment, error=str(exc))
            unreadable += 1
            continue
        mine = [c for c in report.counts if c.experiment == experiment and c.metric == metric]
        for item in mine:
            add = counts_of(item)
            prior = counts.get(item.variant)
            counts[item.variant] = prior.merged(add) if prior else add
        sidecars += bool(mine)
    return counts, sidecars, unreadable


def _outcome_key(keyspace: Keyspace, kv: KeyValue) -> tuple[str, ...]:
    """(sidecar id, experiment) of an outcomes key, or () for a key that does not parse."""
    try:
        return keyspace.parse(kv.key).parts
    except KeyError_:
        return ()


def _decode(kv: KeyValue) -> Experiment:
    try:
        return Experiment.decode(kv.value)
    except RecordError as exc:
        raise errors.StoredRecordInvalid(f"stored record {kv.key} is unreadable: {exc}") from exc
