"""Progressive rollouts: the plan's state machine, its audited operations, the API, and the
leader's controller, which asks a ``HealthGate`` (``configsvc.health.PolicyGate``) before
every step. The gate lives above this package and is handed in, so rollouts know no health."""

from configsvc.rollouts.api import GateReporter, RolloutApi
from configsvc.rollouts.controller import AlwaysProceed, GateDecision, HealthGate, RolloutController
from configsvc.rollouts.ops import RolloutOps, StartRollout

__all__ = [
    "AlwaysProceed",
    "GateDecision",
    "GateReporter",
    "HealthGate",
    "RolloutApi",
    "RolloutController",
    "RolloutOps",
    "StartRollout",
]
