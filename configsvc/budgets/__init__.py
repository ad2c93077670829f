"""Budgets in configsvc: the API and operations, prices, and the leader's controller that slices
fleet-wide budgets among live sidecars."""

from configsvc.budgets.api import BudgetApi
from configsvc.budgets.controller import BUDGET_ELECTION, BudgetController
from configsvc.budgets.ops import BudgetOps

__all__ = ["BUDGET_ELECTION", "BudgetApi", "BudgetController", "BudgetOps"]
