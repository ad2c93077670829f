"""A/B experiments on the sidecar: feedback from the agent and outcome counts published to etcd."""

from __future__ import annotations

from sidecar.experiments.feedback import ExperimentBook, FeedbackApi
from sidecar.experiments.outcomes import OutcomePublisher

__all__ = ["ExperimentBook", "FeedbackApi", "OutcomePublisher"]
