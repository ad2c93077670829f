"""Token and cost budgets on the request path: admission against the ledger, settlement on the
provider's usage, and the sidecar's side of fleet-wide slices."""

from __future__ import annotations

from sidecar.budgets.filter import DEGRADED_HEADER, REMAINING_HEADER, BudgetFilter, BudgetOptions
from sidecar.budgets.keeper import BudgetKeeper
from sidecar.budgets.ledger import Ledger
from sidecar.budgets.metrics import BudgetMetrics

__all__ = [
    "DEGRADED_HEADER",
    "REMAINING_HEADER",
    "BudgetFilter",
    "BudgetKeeper",
    "BudgetMetrics",
    "BudgetOptions",
    "Ledger",
]
