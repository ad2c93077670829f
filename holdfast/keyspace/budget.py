"""Token budgets (``budgets/<scope>``); the fleet's slices and spend reports of them are in
``holdfast.keyspace.quota``.

Scopes: ``session:ID`` and ``tenant:ID`` (IDs as in pins), ``agent:NAME``, ``global``. A
session budget is enforced by the sidecar serving the session alone; agent, tenant and global
budgets are fleet-wide: configsvc's budget controller hands every live sidecar a slice
(``grant``) of the window's limit, and a sidecar never admits beyond what it holds. Only the
sidecars a scope can meter take part in it: ``agent:NAME`` the sidecars of that agent,
``tenant:`` and ``global`` every sidecar (``applies_to``).

A session budget may also limit the session's **tool calls** (MCP ``tools/call``) per window,
counted by the sidecar serving the session (sidecar.budgets.tool_calls); fleet-wide scopes have
no tool-call limit (no slices are handed out for one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final, Self

from holdfast.budgets.window import WindowError, check_window, check_zone
from holdfast.keyspace import fields
from holdfast.keyspace.codec import RecordError, decode_record, encode_record
from holdfast.keyspace.keys import ID_RE, NAME_RE

FLEET_KINDS: Final = frozenset({"agent", "tenant", "global"})
MAX_TOKENS_LIMIT: Final = 10**15
MAX_TOOL_CALLS_LIMIT: Final = 10**9
MAX_REQUEST_CAP: Final = 10**7
DEFAULT_SOFT: Final = 0.8
ACTIONS: Final = ("reject", "degrade")
MAX_COST_MICROS: Final = 10**15  # a cost limit: 1 micro-dollar ... 1e9 USD
# A cost limit is metered like a token limit, under its own meter id ``usd:<scope>`` (no scope
# starts with ``usd:``): the same ledger, rolling windows, quota slices and spend reports,
# counted in micro-dollars (holdfast.keyspace.price).
COST_PREFIX: Final = "usd:"
# How long a request that does not fit only because of reservations in flight (or a short fleet
# slice) may wait for room before a 429; 0 turns waiting off (refuse at once).
DEFAULT_QUEUE_TIMEOUT: Final = 10.0
MAX_QUEUE_TIMEOUT: Final = 300.0


def meter_id(scope: str, unit: str) -> str:
    """The id of one meter of a budget: the scope itself for tokens, ``usd:<scope>`` for cost."""
    return f"{COST_PREFIX}{scope}" if unit == "usd" else scope


def split_meter(meter: str) -> tuple[str, str]:
    """``(scope, unit)`` of a meter id; RecordError if the scope is not one."""
    scope, unit = (
        (meter[len(COST_PREFIX) :], "usd") if meter.startswith(COST_PREFIX) else (meter, "tokens")
    )
    scope_kind(scope)
    return scope, unit


def scope_kind(scope: str) -> str:
    """The kind of a scope string, or RecordError saying what a scope looks like."""
    if scope == "global":
        return "global"
    kind, sep, ident = scope.partition(":")
    ok = (
        sep
        and (
            (kind in ("session", "tenant") and ID_RE.fullmatch(ident))
            or (kind == "agent" and NAME_RE.fullmatch(ident))
        )
        and ID_RE.fullmatch(scope)
    )
    if not ok:
        raise RecordError(
            f"invalid budget scope {scope!r:.150}: use session:ID, agent:NAME, tenant:ID or global"
        )
    return kind


def is_fleet(scope: str) -> bool:
    return scope_kind(scope) in FLEET_KINDS


def applies_to(scope: str, agent: str | None) -> bool:
    """Whether requests of a sidecar of ``agent`` can be metered by ``scope`` (None: any)."""
    return agent is None or not scope.startswith("agent:") or scope == f"agent:{agent}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    KIND: ClassVar[str] = "budget"
    scope: str
    tokens: int  # limit per window: prompt + completion tokens (0: no token limit)
    tool_calls: int = 0  # session scopes: MCP tool calls per window (0: no tool-call limit)
    window: str  # 1m, 1h, 1d... or day, month
    zone: str = "UTC"  # for calendar windows
    soft: float = DEFAULT_SOFT  # fraction at which X-Holdfast-Budget-Remaining is sent
    action: str = "reject"  # or "degrade"
    degrade_to: str = ""  # release of the requesting agent that serves once exhausted
    request_cap: int = 0  # max_tokens written into requests that carry none (0: sidecar default)
    cost: int = 0  # limit per window in micro-dollars (0: no cost limit)
    # Seconds a request may wait for reservations in flight to settle or for a bigger slice
    # (records written before it existed read the default).
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT
    # A request whose worst case can no longer fit is admitted with its output cap lowered to
    # what is left, when that is at least this many tokens per choice (0: never; refuse).
    fit_cap: int = 0
    updated_at: float = 0.0
    updated_by: str = ""
    fleet: bool = field(init=False, compare=False, repr=False)  # agent, tenant or global

    def __post_init__(self) -> None:
        # computed once: the request path asks for it on every admission
        object.__setattr__(self, "fleet", scope_kind(self.scope) in FLEET_KINDS)
        if isinstance(self.tokens, bool) or not 0 <= self.tokens <= MAX_TOKENS_LIMIT:
            raise RecordError(f"token limit must be between 1 and {MAX_TOKENS_LIMIT}")
        if isinstance(self.cost, bool) or not 0 <= self.cost <= MAX_COST_MICROS:
            raise RecordError(f"cost limit must be between 1 and {MAX_COST_MICROS} micro-USD")
        if isinstance(self.tool_calls, bool) or not 0 <= self.tool_calls <= MAX_TOOL_CALLS_LIMIT:
            raise RecordError(f"tool-call limit must be between 1 and {MAX_TOOL_CALLS_LIMIT}")
        if self.tool_calls and self.fleet:
            raise RecordError(
                "a tool-call limit applies to session scopes only (session:ID): tool calls are "
                "counted by the sidecar serving the session, fleet-wide scopes get no slices"
            )
        if not self.tokens and not self.cost and not self.tool_calls:
            raise RecordError(
                "a budget needs a token limit, a cost limit or both (or, for a session, a "
                "tool-call limit)"
            )
        if self.cost and len(meter_id(self.scope, "usd")) > 128:
            raise RecordError("a cost-limited scope must be at most 124 characters long")
        try:
            check_window(self.window)
            if check_zone(self.zone) != self.zone:
                raise RecordError("zone must be an IANA time zone name")
        except WindowError as exc:
            raise RecordError(str(exc)) from exc
        if not math.isfinite(self.soft) or not 0.0 < self.soft <= 1.0:
            raise RecordError(f"soft limit must be a fraction in (0, 1], got {self.soft!r}")
        if self.action not in ACTIONS:
            raise RecordError(f"action must be reject or degrade, got {self.action!r:.40}")
        if (self.action == "degrade") != bool(self.degrade_to):
            raise RecordError("degrade needs a release to degrade to (and only degrade has one)")
        fields.check_name(self.degrade_to, what="degrade release", optional=True)
        if not 0 <= self.request_cap <= MAX_REQUEST_CAP:
            raise RecordError(f"request cap must be between 0 and {MAX_REQUEST_CAP}")
        if (
            not math.isfinite(self.queue_timeout)
            or not 0 <= self.queue_timeout <= MAX_QUEUE_TIMEOUT
        ):
            raise RecordError(f"queue timeout must be 0-{MAX_QUEUE_TIMEOUT:g} seconds")
        if isinstance(self.fit_cap, bool) or not 0 <= self.fit_cap <= MAX_REQUEST_CAP:
            raise RecordError(f"fit cap must be between 0 and {MAX_REQUEST_CAP}")

    def meters(self) -> list[tuple[str, str, int]]:
        """``(meter id, unit, limit)`` of each limit this budget sets."""
        out = [(self.scope, "tokens", self.tokens)] if self.tokens else []
        if self.cost:
            out.append((meter_id(self.scope, "usd"), "usd", self.cost))
        return out

    @property
    def on_exhausted(self) -> str:
        return f"degrade:{self.degrade_to}" if self.action == "degrade" else "reject"

    def encode(self) -> bytes:
        return encode_record(self.KIND, self.public())

    @classmethod
    def decode(cls, data: bytes) -> Self:
        f = decode_record(data, kind=cls.KIND)
        return cls(
            scope=fields.text(f, "scope"),
            tokens=fields.integer(f, "tokens", default=0),
            tool_calls=fields.integer(f, "tool_calls", default=0),
            window=fields.text(f, "window"),
            zone=fields.text(f, "zone", optional=True) or "UTC",
            soft=fields.optional_number(f, "soft", DEFAULT_SOFT),
            action=fields.text(f, "action", optional=True) or "reject",
            degrade_to=fields.name(f, "degrade_to", optional=True),
            request_cap=fields.integer(f, "request_cap", default=0),
            cost=fields.integer(f, "cost", default=0),
            queue_timeout=fields.finite(f, "queue_timeout", DEFAULT_QUEUE_TIMEOUT),
            fit_cap=fields.integer(f, "fit_cap", default=0),
            updated_at=fields.optional_number(f, "updated_at", 0.0),
            updated_by=fields.text(f, "updated_by", optional=True),
        )

    def public(self) -> dict[str, Any]:
        return {
            "scope": self.scope,
            "tokens": self.tokens,
            "tool_calls": self.tool_calls,
            "window": self.window,
            "zone": self.zone,
            "soft": self.soft,
            "action": self.action,
            "degrade_to": self.degrade_to,
            "request_cap": self.request_cap,
            "cost": self.cost,
            "queue_timeout": self.queue_timeout,
            "fit_cap": self.fit_cap,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
        }


def decode_budget(parts: tuple[str, ...], value: bytes) -> Budget:
    """The ``budgets`` kind's decoder: the record must validate and name its own key's scope."""
    budget = Budget.decode(value)
    if (budget.scope,) != parts:
        raise RecordError(f"budget record names scope {budget.scope!r:.140}, not its key's")
    return budget
