"""Pure request routing: which release serves a request for a logical model name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from holdfast.bucketing import CANARY, selected
from holdfast.keyspace import Pin, Release, Route
from sidecar.config import ConfigSnapshot, known_models
from sidecar.errors import DialectNotServed, NotConfigured, UnknownModel
from sidecar.routing.experiments import experiment_variant
from sidecar.routing.flags import flag_release

Kind = Literal["new", "pinned", "unpinned"]


class Pinned(Protocol):
    """A session's pin as the pin table holds it (sidecar.pins.table.PinEntry)."""

    @property
    def pin(self) -> Pin: ...

    @property
    def notice_due(self) -> bool:
        """The agent has not yet been told that an operator migrated the session."""
        ...


class Pins(Protocol):
    def get(self, session: str) -> Pinned | None: ...


@dataclass(frozen=True, slots=True)
class Resolved:
    """``migrated_from`` is set when the response must tell the agent its session moved."""

    release: Release
    revision: int
    session: str | None = None
    kind: Kind = "unpinned"
    migrated_from: str | None = None
    experiment: str = ""  # "<experiment>/<variant>" when a running experiment chose the release
    flag: str = ""  # the route's flag, when it was evaluated for this (new) session
    flag_steered: bool = False  # ... and its variant chose the release


def assign(route: Route, agent: str, session: str) -> str:
    """The release a new session gets: the canary for the sticky hash's share, else stable."""
    if route.canary and selected(CANARY, agent, session, route.canary_percent):
        return route.canary
    return route.stable


def resolve(
    snapshot: ConfigSnapshot | None,
    agent: str,
    model: str,
    session: str | None = None,
    pins: Pins | None = None,
    attributes: Mapping[str, str] | None = None,
    speaks: str | None = None,
) -> Resolved:
    """Map the model the agent asked for to the release that serves it now.

    The agent asks for its own name or one of the route's aliases, never a concrete model:
    that indirection is what lets an operator change the model under a running agent. A
    pinned session keeps its pin's release whatever the route says now.

    ``speaks``: the provider kind the request's dialect needs (None: any). A release of
    another kind is refused -- before a new session is pinned to it -- never swapped for
    another release: translating between APIs is not this function's to do.
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
    entry = pins.get(session) if pins is not None and session is not None else None
    if entry is not None:
        release = snapshot.releases.get(entry.pin.release)
        if release is None:
            # Never fall back to the route: that would move a running conversation.
            raise NotConfigured(
                f"session {session!r} is pinned to release {entry.pin.release!r}, which this "
                "sidecar does not know (rejected or missing record); see /status"
            )
        migrated_from = entry.pin.migrated_from if entry.notice_due else None
        _check_speaks(release, speaks, f"session {session!r} is pinned to")
        return Resolved(release, snapshot.revision, session, "pinned", migrated_from)
    experiment = flag = ""
    chosen: str | None = None
    if session is None:
        name = route.stable
    elif route.experiment is not None:
        variant = experiment_variant(route.experiment, agent, session)
        name, experiment = variant.release, f"{route.experiment.name}/{variant.label}"
    else:
        chosen = flag_release(snapshot, route, agent, session, attributes)
        name = chosen if chosen is not None else assign(route, agent, session)
        flag = route.flag
    release = snapshot.releases.get(name)
    if release is None:
        raise NotConfigured(
            f"route of agent {agent!r} points to release {name!r}, which this sidecar "
            "does not know (rejected or missing record); see /status"
        )
    _check_speaks(release, speaks, f"the route of agent {agent!r} sends this request to")
    kind: Kind = "unpinned" if session is None else "new"
    return Resolved(
        release,
        snapshot.revision,
        session,
        kind,
        experiment=experiment,
        flag=flag,
        flag_steered=chosen is not None,
    )


def _check_speaks(release: Release, speaks: str | None, how: str) -> None:
    if speaks is not None and release.provider != speaks:
        raise DialectNotServed(
            f"{how} release {release.name!r}, whose provider is {release.provider}; this "
            f"request speaks the {speaks} API, which that provider does not serve (Holdfast "
            "does not translate between APIs). Send it in the release's API, or have an "
            f"operator route this agent to a release with --provider {speaks}",
            param="model",
        )
