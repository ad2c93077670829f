"""Budget operations over the store: set, show, list, delete (audited), and fleet usage."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Final

from configsvc import errors
from configsvc.budgets.payloads import SetBudget
from configsvc.budgets.quota_view import spend_report, view
from configsvc.releases import ConfigService, store_read
from holdfast.budgets.window import is_rolling
from holdfast.keyspace import RecordError
from holdfast.keyspace.budget import Budget, scope_kind
from holdfast.keyspace.price import usd
from holdfast.keyspace.quota import Quotas, SpendReport
from holdfast.logs import get_logger
from holdfast.store import CasConflict, KeyValue, Put

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class StoredBudget:
    budget: Budget
    mod_revision: int

    def to_json(self) -> dict[str, Any]:
        return {
            **self.budget.public(),
            "on_exhausted": self.budget.on_exhausted,
            "cost_usd": usd(self.budget.cost) if self.budget.cost else None,
            "fleet": self.budget.fleet,
            "mod_revision": self.mod_revision,
        }


def _agent_of(scope: str) -> str:
    return scope.partition(":")[2] if scope_kind(scope) == "agent" else ""


def _decode(kv: KeyValue) -> Budget:
    try:
        return Budget.decode(kv.value)
    except RecordError as exc:
        raise errors.StoredRecordInvalid(f"stored record {kv.key} is unreadable: {exc}") from exc


class BudgetOps:
    def __init__(self, service: ConfigService) -> None:
        self.service = service
        self.keyspace = service.keyspace
        self.store = service.store

    async def get(self, scope: str) -> StoredBudget:
        kv = await store_read(self.store.get(self.keyspace.budget(scope)))
        if kv is None:
            raise errors.BudgetNotFound(f"no budget for scope {scope!r}", param="scope")
        return StoredBudget(_decode(kv), kv.mod_revision)

    async def list(self) -> tuple[int, list[StoredBudget]]:
        revision, kvs = await store_read(
            self.store.list_prefix(self.keyspace.kind_prefix("budgets"))
        )
        return revision, [StoredBudget(_decode(kv), kv.mod_revision) for kv in kvs]

    async def set(self, scope: str, req: SetBudget, actor: str) -> tuple[StoredBudget, bool]:
        agent = _agent_of(scope)
        if req.degrade_to and agent:
            await self.service.get_release(agent, req.degrade_to)  # must exist to degrade to
        key = self.keyspace.budget(scope)
        try:
            budget = Budget(
                scope=scope,
                tokens=req.tokens,
                tool_calls=req.tool_calls,
                window=req.window,
                zone=req.zone,
                soft=req.soft,
                action=req.action,
                degrade_to=req.degrade_to,
                request_cap=req.request_cap,
                cost=req.cost,
                queue_timeout=req.queue_timeout,
                fit_cap=req.fit_cap,
                updated_at=self.service.clock(),
                updated_by=actor,
            )
        except RecordError as exc:
            raise errors.InvalidRequest(str(exc)) from exc
        kv = await store_read(self.store.get(key))
        before = _decode(kv).public() if kv is not None else None
        found = kv.mod_revision if kv is not None else 0
        entry = self.service.audit_entry(
            actor, "budget.set", key, req.reason, before, budget.public(), agent
        )
        try:
            revision = await self.service._write(
                Put(key, budget.encode(), expected_mod_revision=found), entry
            )
        except CasConflict as exc:
            raise errors.RevisionConflict(
                f"budget {scope} changed while it was being set; nothing was written, try again"
            ) from exc
        log.info(
            "budget_set",
            scope=scope,
            tokens=req.tokens,
            cost_micros=req.cost,
            window=req.window,
            actor=actor,
        )
        return StoredBudget(budget, revision), kv is None

    async def delete(self, scope: str, reason: str, actor: str) -> int:
        current = await self.get(scope)
        key = self.keyspace.budget(scope)
        entry = self.service.audit_entry(
            actor, "budget.delete", key, reason, current.budget.public(), None, _agent_of(scope)
        )
        revision = await self.service.audit.write(
            [], entry, deletes=[key], check="`holdfastctl budget list`"
        )
        log.info("budget_deleted", scope=scope, actor=actor)
        return revision

    async def usage(self, scope: str) -> dict[str, Any]:
        """The window's fleet use of the token limit (top level, as before cost limits
        existed, when there is one) and of the cost limit (``cost``, amounts in USD)."""
        stored = await self.get(scope)
        budget = stored.budget
        now = time.time()
        out: dict[str, Any] = {}
        for meter, unit, limit in budget.meters():
            one = await self._meter_usage(budget, meter, limit, now)
            if unit == "usd":
                out["cost"] = _in_usd(one)
            else:
                out.update(one)
        if not budget.tokens and "cost" in out:  # cost only: the common fields at the top, in USD
            out.update({k: v for k, v in out["cost"].items() if k not in out})
        out["scope"] = scope
        out["unit"] = "tokens" if budget.tokens else "usd" if budget.cost else "tool_calls"
        if budget.tool_calls:
            # Counted by the sidecar serving the session, never reported to etcd: its /status
            # (contracts.mcp.tool_call_budgets) shows the count.
            out["tool_calls"] = {
                "limit": budget.tool_calls,
                "window": budget.window,
                "counted_by": "sidecar",
            }
        return out

    async def _meter_usage(
        self, budget: Budget, meter: str, limit: int, now: float
    ) -> dict[str, Any]:
        scope = meter
        quotas_kv = await store_read(self.store.get(self.keyspace.quotas(scope)))
        quotas: Quotas | None = None
        if quotas_kv is not None:
            try:
                quotas = Quotas.decode(quotas_kv.value)
            except RecordError:
                quotas = None
        # Keys are spend/<holder>/<scope> (holder first for etcd roles): read them all.
        _, kvs = await store_read(self.store.list_prefix(self.keyspace.kind_prefix("spend")))
        reports = [
            r for r in (spend_report(self.keyspace, kv) for kv in kvs) if r and r.scope == scope
        ]
        fleet = view(budget, quotas, reports, now)
        span, holders, used = fleet.span, fleet.holders, fleet.used()
        rolling = is_rolling(budget.window)
        return {
            "scope": budget.scope,
            "limit": limit,
            "window": f"rolling {budget.window}" if rolling else span.id,
            "window_ends_at": None if rolling else span.end,
            "rolling": rolling,
            "departed_claims": fleet.tail_tokens,
            "departed_used": fleet.departed,
            "fleet": budget.fleet,
            "used": used,
            "remaining": max(0, limit - used),
            "reserved": sum(
                r.reserved for r in reports if (rolling or r.window == span.id) and not r.final
            ),
            "estimated": sum(r.estimated for r in reports if rolling or r.window == span.id),
            **_queueing([r for r in reports if (rolling or r.window == span.id) and not r.final]),
            "holders": [
                {
                    "holder": name,
                    "grant": h.grant,
                    "used": h.used,
                    "returned": h.returned,
                    "live": h.live,
                    "queued": h.queued,
                }
                for name, h in sorted(holders.items())
            ],
        }


def _queueing(reports: list[SpendReport]) -> dict[str, Any]:
    """Requests waiting for room now, and this window's waits and refusals, fleet-wide."""
    waits = sum(r.waits for r in reports)
    return {
        "waiting": sum(r.waiting for r in reports),
        "queued": sum(r.queued for r in reports),
        "refused_spent": sum(r.refused_spent for r in reports),
        "refused_could_not_wait": sum(r.refused_busy for r in reports),
        "waits": waits,
        "wait_mean_ms": round(sum(r.wait_ms for r in reports) / waits) if waits else 0,
        "wait_max_ms": max((r.wait_max_ms for r in reports), default=0),
    }


_MONEY: Final = (
    "queued",
    "limit",
    "used",
    "remaining",
    "reserved",
    "estimated",
    "departed_claims",
    "departed_used",
)


def _in_usd(usage: dict[str, Any]) -> dict[str, Any]:
    """A cost meter's usage with its micro-dollar amounts as USD strings."""
    out = {k: usd(v) if k in _MONEY else v for k, v in usage.items()}
    out["holders"] = [
        {k: usd(v) if k in ("grant", "used", "returned", "queued") else v for k, v in h.items()}
        for h in usage["holders"]
    ]
    return out
