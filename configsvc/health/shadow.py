"""Pure fleet aggregation of shadow comparisons: windows and totals, per shadow release.

A sidecar's ``ShadowStats`` are cumulative per (primary, shadow, epoch) like the rest of its
snapshot, so a window is the newest snapshot minus the one from the window's start, summed over
sidecars. The running minimum cannot be differenced: a window's figures are the mean similarity
and the tool-call agreement, which are what a gate judges.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from holdfast.keyspace import ShadowStats

ShadowKey = tuple[str, str, float]  # (primary, shadow, epoch)
Shadows = dict[ShadowKey, ShadowStats]
_COUNTERS = ("samples", "tool_agree", "tool_samples", "token_samples", "primary_prompt_tokens",
             "primary_completion_tokens", "shadow_prompt_tokens", "shadow_completion_tokens",
             "shadow_errors", "skipped")  # fmt: skip
_SUMS = ("similarity_sum", "primary_latency_ms_sum", "shadow_latency_ms_sum")


def key_of(s: ShadowStats) -> ShadowKey:
    return (s.primary, s.shadow, s.epoch)


def add_shadow(total: Shadows, stats: Iterable[ShadowStats]) -> None:
    for s in stats:
        key = key_of(s)
        have = total.get(key)
        total[key] = s if have is None else have.merged(s)


def _minus(new: ShadowStats, old: ShadowStats) -> ShadowStats | None:
    """new - old, or None when a counter went down (the sidecar dropped that entry and
    started it again: then the newest counts stand whole)."""
    changes: dict[str, Any] = {}
    for name in _COUNTERS:
        d = getattr(new, name) - getattr(old, name)
        if d < 0:
            return None
        changes[name] = d
    for name in _SUMS:
        changes[name] = max(0.0, getattr(new, name) - getattr(old, name))
    changes["similarity_sum"] = min(changes["similarity_sum"], float(changes["samples"]))
    changes["similarity_min"] = 1.0  # unknown for a window
    return dataclasses.replace(new, **changes)


def difference(latest: Mapping[ShadowKey, ShadowStats], base: Mapping[ShadowKey, ShadowStats] | None
               ) -> list[ShadowStats]:  # fmt: skip
    """One sidecar's comparisons between two of its snapshots (``base`` None: all of them)."""
    out = []
    for key, new in latest.items():
        old = base.get(key) if base is not None else None
        delta = _minus(new, old) if old is not None else None
        out.append(new if delta is None else delta)
    return out


def shadow_view(stats: Iterable[ShadowStats], release: str) -> dict[str, Any]:
    """The figures of ``release`` as a shadow, over every primary and epoch given."""
    mine = [s for s in stats if s.shadow == release]
    samples = sum(s.samples for s in mine)
    tool_samples = sum(s.tool_samples for s in mine)
    return {
        "samples": samples,
        "similarity": sum(s.similarity_sum for s in mine) / samples if samples else None,
        "tool_samples": tool_samples,
        "tool_agreement": sum(s.tool_agree for s in mine) / tool_samples if tool_samples else None,
        "errors": sum(s.shadow_errors for s in mine),
        "skipped": sum(s.skipped for s in mine),
    }
