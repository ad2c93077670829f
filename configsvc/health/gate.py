"""The health gate of progressive rollouts: the policy evaluated on every controller tick.

The window never reaches back before the rollout's start (an earlier attempt of the same
release is not judged again). An evaluation counts towards ``fails_to_abort`` only when the
canary brought new data since the last one (the same data judged twice is one judgement, and a
busy fleet's other agents and releases do not make it new). N consecutive failing evaluations
abort the rollout with the evidence; inconclusive for longer than ``inconclusive_after_s`` of
running time pauses it (a paused rollout's clock stands still, and a pause or resume restarts
it); a pass lets the plan's clock advance it.

Where the windows are: a replica judges an agent from its own windows when it holds the agent's
health (``configsvc.health.replicas``), and otherwise from the evaluation the agent's first
owner recorded (``configsvc.health.evaluations``), whose data version plays the same part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from configsvc.health.evaluations import GateRecords, evaluation_of
from configsvc.health.fleet import FleetHealth
from configsvc.health.verdict import OVERALL, Check, Evaluation, evaluate
from configsvc.rollouts import GateDecision
from holdfast.keyspace import Rollout
from holdfast.logs import get_logger

log = get_logger(__name__)


@dataclass(slots=True)
class _Track:
    rollout_key: tuple[str, float]  # (release, started_at): a new rollout starts afresh
    state: str = "running"
    fails: int = 0
    inconclusive_since: float | None = None
    data_version: int = -1
    last: Evaluation | None = None
    judged_at: float = 0.0
    history: list[str] = field(default_factory=list)


class PolicyGate:
    def __init__(self, fleet: FleetHealth, records: GateRecords | None = None) -> None:
        self.fleet = fleet
        self.records = records
        self._tracks: dict[str, _Track] = {}

    def data_version(self, agent: str, release: str) -> int:
        return self.fleet.windows.data_version(agent, release)

    def current(
        self, agent: str, rollout: Rollout, stable: str
    ) -> tuple[Evaluation | None, int | None]:
        """The evaluation to judge by and its data version (None: no new data to speak of)."""
        if self.records is None or self.records.holds(agent):
            return self.evaluate(agent, rollout, stable), self.data_version(agent, rollout.release)
        record = self.records.recorded(agent, rollout)
        if record is None:
            owner = self.records.replicas.first_owner(agent) or "none registered"
            detail = f"waiting for an evaluation from the agent's health owner ({owner})"
            waiting = Check("health_owner", OVERALL, "inconclusive", None, None, 0.0, detail)
            return Evaluation("inconclusive", (waiting,)), None
        return evaluation_of(record), hash((record.replica, record.data_version))

    def evaluate(self, agent: str, rollout: Rollout, stable: str) -> Evaluation | None:
        policy = rollout.policy
        if policy is None:
            return None
        now, windows = self.fleet.clock(), self.fleet.windows
        since = rollout.started_at or None
        if since is not None and since > now - policy.window_s:
            windows.mark(since)
        return evaluate(
            policy,
            windows.window(agent, policy.window_s, now, since=since),
            canary=rollout.release,
            stable=stable,
            shadow=windows.shadow_window(agent, policy.window_s, now, since=since),
        )

    async def judge(self, agent: str, rollout: Rollout, stable: str = "") -> GateDecision:
        policy = rollout.policy
        if policy is None:
            return GateDecision("proceed")
        key = (rollout.release, rollout.started_at)
        track = self._tracks.get(agent)
        if track is None or track.rollout_key != key:
            track = self._tracks[agent] = _Track(key, state=rollout.state)
        if track.state != rollout.state:
            # Paused or resumed (by anyone): waiting for data starts again from now.
            track.state, track.inconclusive_since = rollout.state, None
        result, version = self.current(agent, rollout, stable)
        assert result is not None
        now = self.fleet.clock()
        fresh = version is not None and version != track.data_version
        if version is not None:
            track.data_version = version
        track.last, track.judged_at = result, now
        if result.verdict == "fail":
            if fresh:
                track.fails += 1
            track.inconclusive_since = None
            if track.fails >= policy.fails_to_abort:
                return GateDecision(
                    "abort",
                    f"health gate: {track.fails} failing evaluations: {result.summary()}",
                    self.evidence(agent),
                )
            return GateDecision("hold", f"failing ({track.fails}/{policy.fails_to_abort})")
        if result.verdict == "pass":
            track.fails, track.inconclusive_since = 0, None
            return GateDecision("proceed")
        if rollout.state != "running":
            return GateDecision("hold", f"paused; inconclusive: {result.summary()}")
        if track.inconclusive_since is None:
            track.inconclusive_since = now
        waited = now - track.inconclusive_since
        if policy.inconclusive_after_s and waited >= policy.inconclusive_after_s:
            return GateDecision(
                "pause",
                f"health gate inconclusive for {waited:.0f}s: {result.summary()}",
                self.evidence(agent),
            )
        return GateDecision("hold", f"inconclusive: {result.summary()}")

    def evidence(self, agent: str) -> dict[str, Any]:
        track = self._tracks.get(agent)
        if track is None or track.last is None:
            return {}
        return {
            "verdict": track.last.verdict,
            "consecutive_fails": track.fails,
            "judged_at": track.judged_at,
            "inconclusive_since": track.inconclusive_since,
            "checks": [c.to_json() for c in track.last.checks if c.verdict != "pass"][:40],
        }

    def report(self, agent: str, rollout: Rollout, stable: str) -> dict[str, Any] | None:
        """What ``rollout status`` shows: each check's verdict now, and the leader's streak."""
        result, _ = self.current(agent, rollout, stable)
        if result is None or rollout.policy is None:
            return None
        track = self._tracks.get(agent)
        mine = track is not None and track.rollout_key == (rollout.release, rollout.started_at)
        return {
            "policy": rollout.policy.to_map(),
            "verdict": result.verdict,
            "summary": result.summary(),
            "consecutive_fails": track.fails if mine and track else None,
            "checks": [c.to_json() for c in result.checks],
        }
