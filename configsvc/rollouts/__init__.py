"""Progressive rollouts: the plan's state machine, its audited operations, the API, and the
leader's controller, which asks a ``HealthGate`` (``configsvc.health.PolicyGate``) before
every step. The gate lives above this package and is handed in, so rollouts know no health.
``RouteWatch`` keeps every route live from one watch, for readers that must not poll etcd."""

from configsvc.rollouts.api import GateReporter, RolloutApi
from configsvc.rollouts.controller import AlwaysProceed, GateDecision, HealthGate, RolloutController
from configsvc.rollouts.ops import RolloutOps, StartRollout
from configsvc.rollouts.plan import CONTROLLER
from configsvc.rollouts.plan import status as rollout_status
from configsvc.rollouts.watch import RouteWatch, WatchedRoute

__all__ = [
    "CONTROLLER",
    "AlwaysProceed",
    "GateDecision",
    "GateReporter",
    "HealthGate",
    "RolloutApi",
    "RolloutController",
    "RolloutOps",
    "RouteWatch",
    "StartRollout",
    "WatchedRoute",
    "rollout_status",
]
