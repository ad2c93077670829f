"""Which release serves a request: session ids, the route (stable, canary, colour), flags and
experiments. Pure."""

from __future__ import annotations

from sidecar.routing.flags import CATEGORY_HEADER, TENANT_HEADER
from sidecar.routing.prompts import index_of, pinned_prompts, session_prompt, unrecorded_prompts
from sidecar.routing.resolve import Resolved, resolve
from sidecar.routing.session import session_id

__all__ = [
    "CATEGORY_HEADER",
    "TENANT_HEADER",
    "Resolved",
    "index_of",
    "pinned_prompts",
    "resolve",
    "session_id",
    "session_prompt",
    "unrecorded_prompts",
]
