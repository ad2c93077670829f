"""A/B experiments in configsvc: start, stop (with a winner), list, show, report; and the rule
other traffic edits obey (``no_experiment``: no canary, rollout or switch while an experiment
owns the agent's traffic split)."""

from configsvc.experiments.api import ExperimentsApi
from configsvc.experiments.ops import ExperimentOps, no_experiment

__all__ = ["ExperimentOps", "ExperimentsApi", "no_experiment"]
