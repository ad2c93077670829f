"""Which variant of a running experiment a new session gets: a sticky hash, pure."""

from __future__ import annotations

from holdfast.bucketing import BUCKETS, bucket
from holdfast.keyspace.experiment import RouteExperiment, Variant

NAMESPACE_PREFIX = "experiment:"


def experiment_variant(experiment: RouteExperiment, agent: str, session: str) -> Variant:
    """Variants take consecutive bucket ranges in their declared order, sized by their split.

    The namespace includes the experiment's name, so a new experiment reshuffles sessions
    independently of the canary hash and of earlier experiments.
    """
    point = bucket(NAMESPACE_PREFIX + experiment.name, agent, session)
    edge = 0.0
    for variant in experiment.variants:
        edge += variant.weight * BUCKETS / 100.0
        if point < round(edge):
            return variant
    return experiment.variants[-1]
