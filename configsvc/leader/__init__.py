"""Leader election through etcd and the loop every leader-only controller (rollouts, budgets)
runs."""

from configsvc.leader.election import ROLLOUT_ELECTION, Election
from configsvc.leader.loop import LeaderLoop, Leadership

__all__ = ["ROLLOUT_ELECTION", "Election", "LeaderLoop", "Leadership"]
