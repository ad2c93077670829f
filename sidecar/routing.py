"""Pure request routing: which release serves a request for a logical model name."""

from __future__ import annotations

from dataclasses import dataclass

from holdfast.keyspace import Release
from sidecar.config import ConfigSnapshot, known_models
from sidecar.errors import NotConfigured, UnknownModel


@dataclass(frozen=True, slots=True)
class Resolved:
    release: Release
    revision: int


def resolve(snapshot: ConfigSnapshot | None, agent: str, model: str) -> Resolved:
    """Map the model the agent asked for to the release that serves it now.

    The agent asks for its own name or one of the route's aliases, never a concrete model:
    that indirection is what lets an operator change the model under a running agent.
    """
    if snapshot is None:
        raise NotConfigured(
            "the sidecar has not loaded any configuration yet (etcd not reached and no "
            "saved snapshot); retry shortly"
        )
    names = known_models(snapshot, agent)
    if model not in names:
        raise UnknownModel(
            f"model {model!r:.100} is not routed by this sidecar; ask for one of: "
            + ", ".join(names),
            param="model",
        )
    route = snapshot.route
    if route is None:
        raise NotConfigured(
            f"agent {agent!r} has no route yet; an operator sets one with "
            f"`holdfastctl route set-stable {agent} RELEASE`"
        )
    release = snapshot.releases.get(route.stable)
    if release is None:
        raise NotConfigured(
            f"route of agent {agent!r} points to release {route.stable!r}, which this sidecar "
            "does not know (rejected or missing record); see /status"
        )
    return Resolved(release=release, revision=snapshot.revision)
