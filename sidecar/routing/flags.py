"""Routing by flag: a route may name a string flag whose variant value is a release name.

Evaluated for NEW sessions only (pins still win), with the session id as targeting key and
``agent``, ``tenant`` (X-Holdfast-Tenant) and ``category`` (X-Holdfast-Category) as attributes.
A variant naming a release this sidecar knows wins over canary and stable; a flag that is
missing, killed (DISABLED), matched no rule (DEFAULT), failed, or names an unknown release
leaves the choice to the route.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Final

from holdfast.flags.evaluate import evaluate
from holdfast.keyspace import Route
from sidecar.config import ConfigSnapshot
from sidecar.flags import flags_of

TENANT_HEADER: Final = "X-Holdfast-Tenant"
CATEGORY_HEADER: Final = "X-Holdfast-Category"
MAX_ATTRIBUTE_CHARS: Final = 256
STEERING_REASONS: Final = frozenset({"STATIC", "TARGETING_MATCH", "SPLIT"})


def flag_release(
    snapshot: ConfigSnapshot,
    route: Route,
    agent: str,
    session: str,
    attributes: Mapping[str, str] | None = None,
    *,
    now: float | None = None,
) -> str | None:
    """The release the route's flag picks for a new session, or None: the route decides."""
    if not route.flag:
        return None
    record = flags_of(snapshot).get(route.flag)
    if record is None:
        return None
    given = {k: v[:MAX_ATTRIBUTE_CHARS] for k, v in (attributes or {}).items()}
    context = {**given, "agent": agent, "targetingKey": session}
    result = evaluate(record.spec, context, now=time.time() if now is None else now)
    if result.failed or result.reason not in STEERING_REASONS:
        return None
    value = result.value
    return value if isinstance(value, str) and value in snapshot.releases else None
