"""Pure bookkeeping of shadow traffic: the token budget and the running comparison totals.

No I/O and no event loop: the runner (``sidecar/shadow.py``) feeds them, the health publisher
reads ``ShadowBook.snapshot()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from holdfast.compare import Answer, Comparison
from holdfast.keyspace import ShadowStats

MAX_ENTRIES: Final = 64
StatsKey = tuple[str, str, float]  # (primary release, shadow release, shadow epoch)


class TokenBucket:
    """``per_minute`` tokens, refilled continuously, at most one minute's worth saved up.

    Usage is charged after the fact (a provider reports it only at the end), so the level may
    go below zero; the debt is paid back by the refill before the next sample may start.
    """

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._level = self.capacity
        self._at = clock()

    def level(self) -> float:
        now = self._clock()
        self._level = min(self.capacity, self._level + (now - self._at) * self._rate)
        self._at = now
        return self._level

    def available(self) -> bool:
        return self.level() > 0

    def charge(self, tokens: int) -> None:
        self.level()
        self._level -= tokens


class ShadowBook:
    """Cumulative totals per (primary, shadow, epoch), so sidecars' snapshots simply add up."""

    def __init__(self) -> None:
        self._totals: dict[StatsKey, ShadowStats] = {}

    def _add(self, key: StatsKey, **counts: Any) -> None:
        totals = self._totals.get(key)
        one = ShadowStats(primary=key[0], shadow=key[1], epoch=key[2], **counts)
        if totals is None:
            if len(self._totals) >= MAX_ENTRIES:
                # Oldest epoch first: a retired shadow's numbers matter least.
                del self._totals[min(self._totals, key=lambda k: k[2])]
            self._totals[key] = one
        else:
            self._totals[key] = totals.merged(one)

    def skipped(self, key: StatsKey) -> None:
        self._add(key, skipped=1)

    def error(self, key: StatsKey) -> None:
        self._add(key, shadow_errors=1)

    def compared(
        self,
        key: StatsKey,
        result: Comparison,
        primary: Answer,
        shadow: Answer,
        primary_latency_s: float,
        shadow_latency_s: float,
    ) -> None:
        counts: dict[str, Any] = {
            "samples": 1,
            "similarity_sum": result.similarity,
            "similarity_min": result.similarity,
            "tool_agree": int(result.tools_agree),
            "tool_samples": int(result.tool_sample),
            "primary_latency_ms_sum": primary_latency_s * 1000.0,
            "shadow_latency_ms_sum": shadow_latency_s * 1000.0,
        }
        if primary.prompt_tokens and shadow.prompt_tokens:  # both sides reported usage
            counts |= {
                "token_samples": 1,
                "primary_prompt_tokens": primary.prompt_tokens,
                "primary_completion_tokens": primary.completion_tokens,
                "shadow_prompt_tokens": shadow.prompt_tokens,
                "shadow_completion_tokens": shadow.completion_tokens,
            }
        self._add(key, **counts)

    def snapshot(self) -> tuple[ShadowStats, ...]:
        return tuple(stats for _, stats in sorted(self._totals.items()))
