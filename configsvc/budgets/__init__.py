"""Budgets in configsvc: the API and operations, prices, and the leader's controller that slices
fleet-wide budgets among live sidecars."""
