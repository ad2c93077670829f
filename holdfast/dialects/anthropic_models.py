"""Anthropic's shape of the model list (``GET /v1/models``, ``GET /v1/models/{id}``).

The sidecar serves one list of logical model names; a client that sends ``anthropic-version``
(the anthropic SDK always does, Claude Code too) gets it in Anthropic's shape, paged as
Anthropic pages it (``limit`` 1-1000, default 20; ``after_id``/``before_id``; ``has_more``,
``first_id``, ``last_id``), so ``client.models.list()`` and ``models.retrieve`` work unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

VERSION_HEADER: Final = "anthropic-version"
DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 1000


class BadPage(ValueError):
    """A paging parameter Anthropic's API would refuse; the message names it."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def speaks_anthropic(headers: Mapping[str, str]) -> bool:
    return VERSION_HEADER in headers


def model_info(name: str, created: float) -> dict[str, Any]:
    stamp = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "model", "id": name, "display_name": name, "created_at": stamp}


def model_page(names: Sequence[str], created: float, query: Mapping[str, str]) -> dict[str, Any]:
    """One page of ``names`` (in the order given) as Anthropic's list answer."""
    raw = query.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadPage(f"limit must be an integer from 1 to {MAX_LIMIT}", "limit")
    limit = int(raw)
    after, before = query.get("after_id"), query.get("before_id")
    if after is not None and before is not None:
        raise BadPage("give after_id or before_id, not both", "after_id")
    start, end = 0, len(names)
    if after is not None:
        if after not in names:
            raise BadPage(f"after_id {after!r:.100} is not a model of this list", "after_id")
        start = names.index(after) + 1
        end = min(end, start + limit)
    elif before is not None:
        if before not in names:
            raise BadPage(f"before_id {before!r:.100} is not a model of this list", "before_id")
        end = names.index(before)
        start = max(0, end - limit)
    else:
        end = min(end, limit)
    page = [model_info(name, created) for name in names[start:end]]
    more = end < len(names) if before is None else start > 0
    return {
        "data": page,
        "has_more": more,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }
