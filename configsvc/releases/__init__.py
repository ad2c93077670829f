"""Releases and routes, the base every other concern builds on: ``ConfigService`` (every change
one compare-and-swap with its audit entry), the pure route edits, creating a release (its
prompts and contracts resolved), set stable, aliases, rollback, the audit trail's endpoint, and
calling a release's provider (the warm-up probe and the helpers prompt evaluation shares).
"""

from configsvc.releases.api import ReleasesApi
from configsvc.releases.create import PromptResolver
from configsvc.releases.ops import (
    MAX_CAS_ATTEMPTS,
    ConfigService,
    RouteChange,
    RouteEdit,
    Versioned,
    store_read,
)
from configsvc.releases.payloads import allowed
from configsvc.releases.probe import (
    Prober,
    answer_problem,
    connect_problem,
    provider_session,
    read_capped,
    scrub,
    url_refusal,
)
from configsvc.releases.providers import FORCE_FIELD, checker, migration_mismatch
from configsvc.releases.route_edits import require

__all__ = [
    "FORCE_FIELD",
    "MAX_CAS_ATTEMPTS",
    "ConfigService",
    "Prober",
    "PromptResolver",
    "ReleasesApi",
    "RouteChange",
    "RouteEdit",
    "Versioned",
    "allowed",
    "answer_problem",
    "checker",
    "connect_problem",
    "migration_mismatch",
    "provider_session",
    "read_capped",
    "require",
    "scrub",
    "store_read",
    "url_refusal",
]
