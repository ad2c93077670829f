"""The fleet's quota slices of a budget (``quotas/<scope>``, written by configsvc's budget
controller; each agent's part of it in ``slices/<agent>/<scope>``, which is what the agent's
sidecars watch) and each sidecar's spend report (``spend/<holder>/<scope>``, under its lease)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self

from holdfast.keyspace import fields
from holdfast.keyspace.budget import MAX_TOKENS_LIMIT, split_meter
from holdfast.keyspace.codec import RecordError, decode_record, encode_record
from holdfast.keyspace.fields import check_name
from holdfast.keyspace.keys import ID_RE


def _count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS_LIMIT:
        raise RecordError(f"{what} must be a whole number of tokens, got {value!r:.40}")
    return value


# The grant entry under which the controller keeps what holders that left for good (a final
# spend report) had used: their slices are closed, and this one entry stands for all of them.
# Real holder ids end in ``.<8 hex>``, so no sidecar can be called that.
DEPARTED: Final = "departed"
# In an agent's part of the slices (``slices/<agent>/<scope>``, ``agent_part``): the grants,
# and the demand, of every holder of other agents, as one entry each.
OTHERS: Final = "others"


@dataclass(frozen=True, slots=True, kw_only=True)
class Quotas:
    """The slices of one fleet-wide budget for one window, written by the budget controller.

    ``grants`` only grow within a window (holder -> tokens it may admit in the window); holders
    give tokens back through their spend report (``returned``), never by the controller taking
    them. ``used`` is what the controller last saw the fleet use, for display and headers.
    ``reported`` keeps each holder's last report of this window (holder -> (used, returned)),
    so that what it gave back still counts once its report is gone (a crash, a cut-off); a
    holder that left with a final report is folded into the ``DEPARTED`` grant. A reader that
    knows neither counts a holder without a report at its whole grant: more, never less.
    """

    KIND: ClassVar[str] = "quotas"
    scope: str
    window: str  # the Span id these grants belong to
    limit: int
    grants: dict[str, int] = field(default_factory=dict)
    used: int = 0
    share: int = 0  # an equal part of what is left per live holder; hold at most ~2x that
    at: float = 0.0
    # Rolling windows: claims of holders gone at an epoch turn, kept (holder -> (tokens, last
    # epoch)) until whatever they may have admitted has aged out of the window.
    tails: dict[str, tuple[int, int]] = field(default_factory=dict)
    reported: dict[str, tuple[int, int]] = field(default_factory=dict)
    # What live holders had reserved in flight (so ``used - reserved`` is a lower bound of the
    # fleet's settled spend: a request that does not fit even above it cannot fit by waiting),
    # and the tokens each holder's waiting requests need (holder -> tokens, none: no entry):
    # holders without waiting requests give their idle slice back when others have some.
    reserved: int = 0
    demand: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        split_meter(self.scope)
        for holder, grant in self.grants.items():
            if not ID_RE.fullmatch(holder):
                raise RecordError(f"invalid quota holder {holder!r:.140}")
            _count(grant, "grant")
        for holder, (claim, _) in self.tails.items():
            if not ID_RE.fullmatch(holder):
                raise RecordError(f"invalid quota holder {holder!r:.140}")
            _count(claim, "tail")
        for holder, (used, returned) in self.reported.items():
            if not ID_RE.fullmatch(holder):
                raise RecordError(f"invalid quota holder {holder!r:.140}")
            _count(used, "reported use")
            _count(returned, "reported return")
        for holder, need in self.demand.items():
            if not ID_RE.fullmatch(holder):
                raise RecordError(f"invalid quota holder {holder!r:.140}")
            _count(need, "demand")
        _count(self.reserved, "reserved")
        # Grants only grow within a window and holders give tokens back through their spend
        # reports, so the grants alone may add up to more than the limit; what the controller
        # keeps at or below the limit is grants minus what was given back.

    def encode(self) -> bytes:
        return encode_record(self.KIND, self.public())

    @classmethod
    def decode(cls, data: bytes) -> Self:
        f = decode_record(data, kind=cls.KIND)
        grants = fields.submap(f, "grants") or {}
        tails = fields.submap(f, "tails") or {}
        reported = fields.submap(f, "reported") or {}
        demand = fields.submap(f, "demand") or {}
        return cls(
            scope=fields.text(f, "scope"),
            window=fields.text(f, "window"),
            limit=_count(f.get("limit"), "limit"),
            grants={str(k): _count(v, "grant") for k, v in grants.items()},
            used=_count(f.get("used", 0), "used"),
            share=_count(f.get("share", 0), "share"),
            at=fields.optional_number(f, "at", 0.0),
            tails={str(k): _tail(v) for k, v in tails.items()},
            reported={str(k): _pair(v) for k, v in reported.items()},
            reserved=_count(f.get("reserved", 0), "reserved"),
            demand={str(k): _count(v, "demand") for k, v in demand.items()},
        )

    @property
    def settled_floor(self) -> int:
        """A lower bound of what the fleet has settled (or lost to departed holders)."""
        return max(0, self.used - self.reserved)

    @property
    def tail_tokens(self) -> int:
        return sum(claim for claim, _ in self.tails.values())

    def public(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "window": self.window,
            "limit": self.limit,
            "grants": dict(self.grants),
            "used": self.used,
            "share": self.share,
            "at": self.at,
            "tails": {k: [claim, until] for k, (claim, until) in self.tails.items()},
            "reported": {k: [used, back] for k, (used, back) in self.reported.items()},
            "reserved": self.reserved,
            "demand": dict(self.demand),
        }


def _pair(value: object) -> tuple[int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise RecordError("a reported entry must be [used, returned]")
    return _count(value[0], "reported use"), _count(value[1], "reported return")


def _tail(value: object) -> tuple[int, int]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise RecordError("a quota tail must be [tokens, last epoch]")
    claim, until = value
    if isinstance(until, bool) or not isinstance(until, int):
        raise RecordError("a quota tail's last epoch must be a whole number")
    return _count(claim, "tail"), until


_REPORT_COUNTS: Final = (
    "used",
    "reserved",
    "returned",
    "estimated",
    "want",
    # optional since queueing: older reports read 0
    "queued",
    "waiting",
    "refused_spent",
    "refused_busy",
    "waits",
    "wait_ms",
    "wait_max_ms",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class SpendReport:
    """One sidecar's use of one fleet-wide budget in one window (under the sidecar's lease).

    ``used`` = settled + reserved; ``returned`` only grows within a window: tokens of its grants
    the holder promises never to use, so the controller may hand them to others. ``final``: the
    holder is shutting down and has given back all it did not use -- it admits nothing more,
    so ``used`` is all it will ever have used (written under a short lease of its own).
    """

    KIND: ClassVar[str] = "spend"
    scope: str
    holder: str
    window: str
    used: int
    reserved: int = 0
    returned: int = 0
    estimated: int = 0  # settled tokens that were estimated (no usage from the provider)
    want: int = 0  # the largest request refused (or waiting) since the previous report
    at: float = 0.0
    final: bool = False
    # The holder's agent: the controller writes the agent's slices/<agent>/<scope> from it
    # ("": a sidecar from before slices, which reads quotas/<scope> itself).
    agent: str = ""
    queued: int = 0  # tokens the requests waiting for room on this holder need, together
    waiting: int = 0  # how many requests wait
    # In the window: refusals because the budget was spent / because a request could not wait,
    # and the waits for room (how many, milliseconds added up, the longest).
    refused_spent: int = 0
    refused_busy: int = 0
    waits: int = 0
    wait_ms: int = 0
    wait_max_ms: int = 0

    def __post_init__(self) -> None:
        split_meter(self.scope)
        if not ID_RE.fullmatch(self.holder):
            raise RecordError(f"invalid quota holder {self.holder!r:.140}")
        check_name(self.agent, what="agent", optional=True)
        for name in _REPORT_COUNTS:
            _count(getattr(self, name), name)

    def encode(self) -> bytes:
        return encode_record(self.KIND, self.public())

    @classmethod
    def decode(cls, data: bytes) -> Self:
        f = decode_record(data, kind=cls.KIND)
        return cls(
            scope=fields.text(f, "scope"),
            holder=fields.text(f, "holder"),
            window=fields.text(f, "window"),
            used=_count(f.get("used"), "used"),
            reserved=_count(f.get("reserved", 0), "reserved"),
            returned=_count(f.get("returned", 0), "returned"),
            estimated=_count(f.get("estimated", 0), "estimated"),
            want=_count(f.get("want", 0), "want"),
            at=fields.optional_number(f, "at", 0.0),
            final=f.get("final") is True,
            agent=fields.name(f, "agent", optional=True),
            **{name: _count(f.get(name, 0), name) for name in _REPORT_COUNTS[5:]},
        )

    def public(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "holder": self.holder,
            "window": self.window,
            "used": self.used,
            "reserved": self.reserved,
            "returned": self.returned,
            "estimated": self.estimated,
            "want": self.want,
            "at": self.at,
            "final": self.final,
            "agent": self.agent,
            **{name: getattr(self, name) for name in _REPORT_COUNTS[5:]},
        }


def agent_part(quotas: Quotas, holders: set[str]) -> Quotas:
    """What ``slices/<agent>/<scope>`` holds: the fleet's figures, the grants and demand of the
    agent's own holders, and every other holder folded into one ``OTHERS`` entry of each.

    A sidecar reads its own grant, the fleet's use and settled floor, the equal share, and only
    whether anybody else holds a slice or waits for room (``sidecar.budgets.keeper``: it gives
    headroom back for them); another agent's holders never reach it, by id or one by one.
    ``tails`` and ``reported`` are the controller's own bookkeeping and stay in ``quotas/``.
    """
    foreign_grants = sum(g for h, g in quotas.grants.items() if h not in holders and h != DEPARTED)
    foreign_demand = sum(d for h, d in quotas.demand.items() if h not in holders)
    grants = {h: g for h, g in quotas.grants.items() if h in holders}
    demand = {h: d for h, d in quotas.demand.items() if h in holders}
    if foreign_grants:
        grants[OTHERS] = min(foreign_grants, MAX_TOKENS_LIMIT)
    if foreign_demand:
        demand[OTHERS] = min(foreign_demand, MAX_TOKENS_LIMIT)
    return Quotas(
        scope=quotas.scope,
        window=quotas.window,
        limit=quotas.limit,
        grants=grants,
        used=quotas.used,
        share=quotas.share,
        at=quotas.at,
        reserved=quotas.reserved,
        demand=demand,
    )
