"""Decoder of ``budgets/<scope>`` records for the sidecar's config (see sidecar.kinds)."""

from __future__ import annotations

from holdfast.keyspace import RecordError
from holdfast.keyspace.budget import Budget


def decode_budget(parts: tuple[str, ...], value: bytes) -> Budget:
    budget = Budget.decode(value)
    if (budget.scope,) != parts:
        raise RecordError(f"budget record names scope {budget.scope!r:.140}, not its key's")
    return budget
