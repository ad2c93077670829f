"""Pure fleet aggregation of tool-contract signals: per release x tool, windows and totals.

The sidecars' ``ToolSignals`` are cumulative like the rest of a health snapshot, so a window is
the newest snapshot minus the one from the window's start, summed over sidecars. A sidecar whose
tool counters went down (it dropped its table) contributes its newest counts whole, never a
negative difference.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from holdfast.keyspace.signals import LATENCY_BOUNDS_MS, quantile
from holdfast.keyspace.tool_signals import ERROR_PREFIX, HIST_LEN, VIOLATION_PREFIX, ToolSignals

ToolKey = tuple[str, str]  # (release, tool)
Tools = dict[ToolKey, ToolSignals]


def add_tools(total: Tools, signals: Iterable[ToolSignals]) -> None:
    for s in signals:
        have = total.get(s.key)
        total[s.key] = s if have is None else have.combined(s)


class _Sum:
    __slots__ = ("counts", "hist", "latency", "version")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.hist = [0] * HIST_LEN
        self.latency = 0.0
        self.version = ""


class ToolTotal:
    """Tool signals summed over a fleet in place: a window over hundreds of sidecars builds one
    record per (release, tool) at the end instead of one per sidecar and step."""

    def __init__(self) -> None:
        self._sums: dict[ToolKey, _Sum] = {}

    def add(self, s: ToolSignals, sign: int = 1) -> None:
        acc = self._sums.get(s.key)
        if acc is None:
            acc = self._sums[s.key] = _Sum()
        counts = acc.counts
        for name, n in s.counts.items():
            counts[name] = counts.get(name, 0) + sign * n
        hist = acc.hist
        for i, n in enumerate(s.latency_ms):
            hist[i] += sign * n
        acc.latency += sign * s.latency_ms_sum
        if sign == 1 and s.version:
            acc.version = s.version  # the version last seen

    def add_difference(
        self, latest: Mapping[ToolKey, ToolSignals], base: Mapping[ToolKey, ToolSignals] | None
    ) -> None:
        """One sidecar's traffic between two of its snapshots, as ``difference`` gives it."""
        for key, new in latest.items():
            self.add(new)
            old = base.get(key) if base is not None else None
            if old is not None and not _regressed(new, old):
                self.add(old, -1)

    def result(self) -> Tools:
        return {
            key: ToolSignals(
                release=key[0],
                tool=key[1],
                version=acc.version,
                counts={k: v for k, v in acc.counts.items() if v},
                latency_ms_sum=acc.latency,
                latency_ms=tuple(acc.hist),
            )
            for key, acc in self._sums.items()
        }


def _regressed(new: ToolSignals, old: ToolSignals) -> bool:
    return any(new.count(k) < v for k, v in old.counts.items()) or any(
        a < b for a, b in zip(new.latency_ms, old.latency_ms, strict=True)
    )


def difference(latest: Mapping[ToolKey, ToolSignals], base: Mapping[ToolKey, ToolSignals] | None
               ) -> list[ToolSignals]:  # fmt: skip
    """One sidecar's traffic between two of its snapshots (``base`` None: all of it)."""
    out = []
    for key, new in latest.items():
        old = base.get(key) if base is not None else None
        if old is None or _regressed(new, old):
            out.append(new)
        else:
            out.append(new.combined(old, -1))
    return out


def tool_view(t: ToolSignals) -> dict[str, Any]:
    """The figures a person reads for one release x tool."""
    calls = t.count("calls")
    errors = {k.removeprefix(ERROR_PREFIX): v for k, v in t.counts.items()
              if k.startswith(ERROR_PREFIX) and v}  # fmt: skip
    violations = {k.removeprefix(VIOLATION_PREFIX): v for k, v in t.counts.items()
                  if k.startswith(VIOLATION_PREFIX) and v}  # fmt: skip
    return {
        "version": t.version,
        "calls": calls,
        "errors": sum(errors.values()),
        "error_rate": sum(errors.values()) / calls if calls else None,
        "errors_by_outcome": errors,
        "avg_ms": t.latency_ms_sum / calls if calls else None,
        "p95_ms": quantile(LATENCY_BOUNDS_MS, t.latency_ms, 0.95),
        "violations": sum(violations.values()),
        "violations_by_kind": violations,
        "unavailable": t.count("unavailable"),
    }


def by_release(tools: Mapping[ToolKey, ToolSignals]) -> dict[str, dict[str, dict[str, Any]]]:
    """release -> tool -> view."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (release, tool), t in sorted(tools.items()):
        out.setdefault(release, {})[tool] = tool_view(t)
    return out
