"""Which configsvc replicas hold an agent's health: rendezvous hashing over the live replicas.

Every sidecar of an agent sends its health beats to the agent's first ``HEALTH_COPIES`` owners,
and every replica computes the same owners from the same members (``members/`` in etcd), so no
coordinator is needed: the replicas share the agents between them, and an agent has a second
copy of its health on another replica for when the first one dies. Rendezvous (highest random
weight) hashing moves only the agents whose owners include a replica that joined or left.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

HEALTH_COPIES: Final = 2


def _weight(agent: str, replica: str) -> bytes:
    return hashlib.blake2b(f"{agent}\0{replica}".encode(), digest_size=8).digest()


def owners(agent: str, replicas: Iterable[str], count: int = HEALTH_COPIES) -> list[str]:
    """The replicas that hold ``agent``'s health, first owner first (ties broken by id)."""
    ranked = sorted(set(replicas), key=lambda r: (_weight(agent, r), r), reverse=True)
    return ranked[:count]
