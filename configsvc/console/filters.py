"""The audit page's filters and the paging of every list, parsed from the query string (pure).

A bad value is the viewer's mistake and is said so on the page (400 ``invalid_request``), never
a 500.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar, Final

from configsvc.audit import HistoryItem
from configsvc.errors import InvalidRequest
from holdfast.names import NAME_RE

ACTION_RE: Final = re.compile(r"[a-z][a-z0-9_.]{0,63}")
MAX_ACTOR: Final = 160
MAX_PAGE: Final = 10_000
LATEST: Final = 253_402_300_799.0  # 9999-12-31T23:59:59Z, the last moment a date can name


def page_number(query: Mapping[str, str]) -> int:
    raw = query.get("page", "1") or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE:
        raise InvalidRequest(f"page must be a number from 1 to {MAX_PAGE}")
    return int(raw)


def moment(raw: str, what: str) -> float | None:
    """A time as the form sends it: ISO 8601 (UTC unless it says), a date, or Unix seconds."""
    raw = raw.strip()
    if not raw:
        return None
    try:
        at = float(raw)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(raw)
        except ValueError:
            wanted = f"{what}: use a date and time like 2025-06-01T14:30 (UTC)"
            raise InvalidRequest(wanted, param=what) from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        at = parsed.timestamp()
    if not 0 <= at <= LATEST:  # NaN too
        raise InvalidRequest(f"{what}: a time between 1970 and 9999")
    return at


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor: str = ""  # part of the actor ("alice" finds "token:alice" and "alice:laptop")
    kind: str = ""  # an action ("rollout.abort") or its family ("rollout")
    agent: str = ""
    since: float | None = None
    until: float | None = None
    before: int | None = None  # the page starts below this revision

    FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"actor", "kind", "agent", "since", "until", "before"}
    )

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> AuditFilter:
        unknown = sorted(set(query) - cls.FIELDS)
        if unknown:
            raise InvalidRequest(f"unknown filter {unknown[0]!r:.40}")
        actor = query.get("actor", "").strip()
        if len(actor) > MAX_ACTOR or any(not c.isprintable() for c in actor):
            raise InvalidRequest(f"actor: at most {MAX_ACTOR} printable characters")
        kind = query.get("kind", "").strip()
        if kind and not ACTION_RE.fullmatch(kind):
            raise InvalidRequest("kind: an action such as rollout.abort, or a family such as flag")
        agent = query.get("agent", "").strip()
        if agent and not NAME_RE.fullmatch(agent):
            raise InvalidRequest("agent: not a valid agent name")
        before_raw = query.get("before", "").strip()
        if before_raw and not before_raw.isdigit():
            raise InvalidRequest("before: an etcd revision")
        since = moment(query.get("since", ""), "since")
        until = moment(query.get("until", ""), "until")
        if since is not None and until is not None and since > until:
            raise InvalidRequest("since is after until")
        return cls(actor, kind, agent, since, until, int(before_raw) if before_raw else None)

    def matches(self, item: HistoryItem) -> bool:
        e = item.entry
        if self.agent and e.extra.get("agent") != self.agent:
            return False
        if self.kind and e.action != self.kind and not e.action.startswith(self.kind + "."):
            return False
        if self.actor and self.actor.lower() not in e.actor.lower():
            return False
        if self.since is not None and e.at < self.since:
            return False
        return self.until is None or e.at <= self.until

    def query(self, before: int | None) -> dict[str, str]:
        """The query string of the page that starts below ``before``."""
        out = {k: v for k, v in (("actor", self.actor), ("kind", self.kind),
                                 ("agent", self.agent)) if v}  # fmt: skip
        for name, at in (("since", self.since), ("until", self.until)):
            if at is not None:
                out[name] = datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        if before is not None:
            out["before"] = str(before)
        return out
