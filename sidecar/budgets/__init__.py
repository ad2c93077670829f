"""Token and cost budgets on the request path: admission against the ledger, settlement on the
provider's usage, and the sidecar's side of fleet-wide slices; tool-call limits of sessions."""

from __future__ import annotations

from sidecar.budgets.filter import (
    DEGRADED_HEADER,
    REMAINING_HEADER,
    BudgetFilter,
    BudgetOptions,
    estimator,
)
from sidecar.budgets.keeper import BudgetKeeper
from sidecar.budgets.ledger import Ledger
from sidecar.budgets.metrics import BudgetMetrics
from sidecar.budgets.queue import AdmissionQueue
from sidecar.budgets.tool_calls import ToolCallBudget, ToolCallRefused

__all__ = [
    "DEGRADED_HEADER",
    "REMAINING_HEADER",
    "AdmissionQueue",
    "BudgetFilter",
    "BudgetKeeper",
    "BudgetMetrics",
    "BudgetOptions",
    "Ledger",
    "ToolCallBudget",
    "ToolCallRefused",
    "estimator",
]
