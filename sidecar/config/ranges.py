"""What a sidecar watches: exact key ranges, nothing another agent or sidecar writes for itself.

Environment-wide kinds (every key concerns every sidecar of the environment): the configuration
kinds of ``CONFIG_KINDS`` and the live configsvc replicas (``members/``, where health goes).
Agent-scoped kinds (``<kind>/<agent>/...``, ``holdfast.keyspace.keys.AGENT_SCOPED``): the
sidecar's own agent's part only; a new agent-scoped kind is one line in ``AGENT_KINDS``. And the
agent's route, one exact key. The budget keeper watches its agent's ``slices/<agent>/`` itself
(``sidecar.budgets.keeper``), on the same stream. Health, spend and outcomes of other sidecars,
other agents' pins, releases, state owners and quota slices never reach a sidecar: each range is
a watch id on the store's one watch stream.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from holdfast.keyspace import Keyspace
from holdfast.keyspace.keys import AGENT_SCOPED
from holdfast.store import KeyRange

# Environment-wide kinds a sidecar follows besides its configuration kinds.
ENV_FOLLOWED: Final = ("members",)
# Agent-scoped kinds the sidecar's main watch follows for its own agent: one line per kind.
AGENT_KINDS: Final = (
    "pins",
    "releases",
    "responses",
)


assert set(AGENT_KINDS) <= AGENT_SCOPED, "an agent kind must be agent-scoped in the keyspace"


def sidecar_ranges(keyspace: Keyspace, agent: str, config_kinds: Iterable[str]) -> list[KeyRange]:
    """The sidecar's watch: every range it reads, disjoint, in a stable order."""
    env_kinds = sorted({*config_kinds, *ENV_FOLLOWED})
    ranges = [KeyRange.prefix(keyspace.kind_prefix(kind)) for kind in env_kinds]
    ranges += [KeyRange.prefix(keyspace.agent_prefix(kind, agent)) for kind in AGENT_KINDS]
    ranges.append(KeyRange.exact(keyspace.route(agent)))
    return ranges
