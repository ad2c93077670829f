"""configsvc's own Prometheus metrics, read at scrape time from what the process already holds.

The sidecars' ``/metrics`` say how requests fare; these say what on-call must know of the
control plane: is this replica connected to etcd, does it lead, where is each rollout (and did
one abort, when, by the gate or by a person), how many sidecars each agent has and how many of
them lag the route. Every replica reports the same rollout series (they come from one watch of
the routes), so alerts take the ``max`` over replicas rather than a sum.

Sidecars' health beats go to their agent's owner replicas only (``configsvc.health.replicas``):
every replica counts every agent's live sidecars (their presence is in etcd), but only an owner
knows whether they lag or went quiet, so ``..._behind`` and ``..._quiet`` come from the owners
(``max`` over replicas still holds). The health ingest's own figures -- beats taken, the event
loop time they cost, the agents held, the replicas known -- are per replica.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from configsvc.health import FleetHealth, ReplicaSet
from configsvc.leader import Election
from configsvc.rollouts import CONTROLLER, RouteWatch

QUIET_AFTER_S = 15.0


class ControlPlaneCollector(Collector):
    def __init__(
        self,
        *,
        routes: RouteWatch,
        fleet: FleetHealth,
        elections: Mapping[str, Election],
        extra: Callable[[], Iterator[Metric]] | None = None,
        clock: Callable[[], float] = time.time,
        replicas: ReplicaSet | None = None,  # None: this replica holds every agent's health
    ) -> None:
        self.replicas = replicas
        self.routes = routes
        self.fleet = fleet
        self.elections = elections
        self.extra = extra
        self.clock = clock

    def describe(self) -> list[Any]:
        return []  # labels come and go with agents and rollouts

    def collect(self) -> Iterator[Metric]:
        connected = GaugeMetricFamily(
            "holdfast_configsvc_etcd_connected",
            "1 while this configsvc's watch of etcd is healthy, by what it watches.",
            labels=["watch"],
        )
        connected.add_metric(["routes"], float(self.routes.connected))
        connected.add_metric(["health"], float(self.fleet.connected))
        yield connected
        leader = GaugeMetricFamily(
            "holdfast_configsvc_leader",
            "1 when this replica leads the election (rollouts, budgets).",
            labels=["election"],
        )
        for name, election in sorted(self.elections.items()):
            leader.add_metric([name], float(election.is_leader))
        yield leader
        yield from self._rollouts()
        yield from self._fleet()
        yield from self._ingest()
        if self.extra is not None:
            yield from self.extra()

    def _rollouts(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "holdfast_rollout_state",
            "1 for each agent's latest rollout, labelled with its release and state "
            "(running, paused, done, aborted).",
            labels=["agent", "release", "state"],
        )
        percent = GaugeMetricFamily(
            "holdfast_rollout_canary_percent",
            "Share of new sessions the route gives its canary (0 when it has none).",
            labels=["agent", "release"],
        )
        step = GaugeMetricFamily(
            "holdfast_rollout_step",
            "The rollout's current step, counted from 1, and its number of steps.",
            labels=["agent", "release", "of"],
        )
        aborted = GaugeMetricFamily(
            "holdfast_rollout_aborted_timestamp_seconds",
            "When the agent's latest rollout was aborted (Unix time), by the health gate "
            "(by=gate) or a person (by=operator); absent unless it was.",
            labels=["agent", "release", "by"],
        )
        for agent, watched in sorted(self.routes.routes.items()):
            route = watched.route
            percent.add_metric([agent, route.canary or ""], route.canary_percent)
            rollout = route.rollout
            if rollout is None:
                continue
            state.add_metric([agent, rollout.release, rollout.state], 1.0)
            step.add_metric([agent, rollout.release, str(len(rollout.steps))], rollout.step + 1.0)
            if rollout.state == "aborted":
                by = "gate" if route.updated_by == CONTROLLER else "operator"
                aborted.add_metric([agent, rollout.release, by], rollout.ended_at)
        yield from (state, percent, step, aborted)

    def _fleet(self) -> Iterator[Metric]:
        sidecars = GaugeMetricFamily(
            "holdfast_fleet_sidecars",
            "Live sidecars per agent (a health snapshot under a live lease).",
            labels=["agent"],
        )
        behind = GaugeMetricFamily(
            "holdfast_fleet_sidecars_behind",
            "Sidecars whose applied config is older than their agent's last route change.",
            labels=["agent"],
        )
        quiet = GaugeMetricFamily(
            "holdfast_fleet_sidecars_quiet",
            f"Sidecars with no health snapshot for {QUIET_AFTER_S:g} s.",
            labels=["agent"],
        )
        now = self.clock()
        counts: dict[str, list[int]] = {}
        routes = self.routes.routes
        for beat in self.fleet.beats():
            row = counts.setdefault(beat.agent, [0, 0, 0])
            row[0] += 1
            watched = routes.get(beat.agent)
            row[1] += watched is not None and beat.config_revision < watched.mod_revision
            row[2] += now - beat.at > QUIET_AFTER_S
        for agent, (n, lagging, silent) in sorted(counts.items()):
            sidecars.add_metric([agent], n)
            if self.replicas is None or self.replicas.holds(agent):
                behind.add_metric([agent], lagging)
                quiet.add_metric([agent], silent)
        yield from (sidecars, behind, quiet)

    def _ingest(self) -> Iterator[Metric]:
        beats = CounterMetricFamily(
            "holdfast_configsvc_health_beats",
            "Health beats this replica took over HTTP (POST /v1/health/beats).",
        )
        beats.add_metric([], self.fleet.ingested)
        cost = CounterMetricFamily(
            "holdfast_configsvc_health_ingest_seconds",
            "Event-loop time this replica spent taking health beats (decode and aggregate).",
        )
        cost.add_metric([], self.fleet.ingest_seconds)
        held = GaugeMetricFamily(
            "holdfast_configsvc_health_agents_held",
            "Agents with sidecars whose health this replica holds (it is one of their owners).",
        )
        agents = {b.agent for b in self.fleet.beats()}
        held.add_metric(
            [], sum(1 for a in agents if self.replicas is None or self.replicas.holds(a))
        )
        members = GaugeMetricFamily(
            "holdfast_configsvc_replicas",
            "configsvc replicas registered in etcd, as this replica sees them.",
        )
        members.add_metric([], len(self.replicas.members) if self.replicas is not None else 1)
        yield from (beats, cost, held, members)
