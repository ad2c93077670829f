"""Pure route edits behind set-stable, rollback and aliases."""

from __future__ import annotations

import pytest

from configsvc.errors import AgentNotFound, NoPreviousRelease
from configsvc.releases import route_edits as routes
from holdfast.keyspace import Route

AGENT = "support"


def test_first_set_stable_creates_the_route() -> None:
    route = routes.with_stable(None, agent=AGENT, release="r1", actor="token:a", now=5.0)
    assert route == Route(agent=AGENT, stable="r1", updated_at=5.0, updated_by="token:a")


def test_set_stable_keeps_the_old_stable_as_rollback_target() -> None:
    r1 = Route(agent=AGENT, stable="r1", aliases=("x",))
    r2 = routes.with_stable(r1, agent=AGENT, release="r2", actor="token:b", now=6.0)
    assert (r2.stable, r2.previous_stable, r2.aliases, r2.updated_by) == (
        "r2",
        "r1",
        ("x",),
        "token:b",
    )
    assert routes.with_stable(r2, agent=AGENT, release="r2", actor="token:c", now=7.0) is r2


def test_rollback_swaps_and_a_second_rollback_undoes_it() -> None:
    route = Route(agent=AGENT, stable="r2", previous_stable="r1")
    back = routes.rolled_back(route, agent=AGENT, actor="token:a", now=1.0)
    assert (back.stable, back.previous_stable) == ("r1", "r2")
    again = routes.rolled_back(back, agent=AGENT, actor="token:a", now=2.0)
    assert (again.stable, again.previous_stable) == ("r2", "r1")


def test_rollback_needs_a_route_with_a_previous_release() -> None:
    with pytest.raises(NoPreviousRelease):
        routes.rolled_back(Route(agent=AGENT, stable="r1"), agent=AGENT, actor="a", now=1.0)
    with pytest.raises(AgentNotFound):
        routes.rolled_back(None, agent=AGENT, actor="a", now=1.0)


def test_aliases() -> None:
    route = Route(agent=AGENT, stable="r1")
    aliased = routes.with_aliases(route, agent=AGENT, aliases=("a", "b"), actor="x", now=1.0)
    assert (aliased.aliases, aliased.stable) == (("a", "b"), "r1")
    assert routes.with_aliases(aliased, agent=AGENT, aliases=("a", "b"), actor="x", now=2.0) is (
        aliased
    )
    with pytest.raises(AgentNotFound):
        routes.with_aliases(None, agent=AGENT, aliases=(), actor="x", now=1.0)
