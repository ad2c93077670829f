"""Functional-health signals per release and query category, measured on every exchange."""
