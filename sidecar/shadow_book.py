"""Pure bookkeeping of shadow traffic: the token budget and the running comparison totals.

No I/O and no event loop: the runner (``sidecar/shadow.py``) feeds them, the health publisher
reads ``ShadowBook.snapshot()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from holdfast.keyspace import ShadowStats
from sidecar.compare import Answer, Comparison

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


@dataclass(slots=True)
class _Totals:
    samples: int = 0
    similarity_sum: float = 0.0
    similarity_min: float = 1.0
    tool_agree: int = 0
    tool_samples: int = 0
    primary_prompt_tokens: int = 0
    primary_completion_tokens: int = 0
    shadow_prompt_tokens: int = 0
    shadow_completion_tokens: int = 0
    primary_latency_ms_sum: float = 0.0
    shadow_latency_ms_sum: float = 0.0
    shadow_errors: int = 0
    skipped: int = 0


class ShadowBook:
    """Cumulative totals per (primary, shadow, epoch), so sidecars' snapshots simply add up."""

    def __init__(self) -> None:
        self._totals: dict[StatsKey, _Totals] = {}

    def _get(self, key: StatsKey) -> _Totals:
        totals = self._totals.get(key)
        if totals is None:
            if len(self._totals) >= MAX_ENTRIES:
                # Oldest epoch first: a retired shadow's numbers matter least.
                del self._totals[min(self._totals, key=lambda k: k[2])]
            totals = self._totals[key] = _Totals()
        return totals

    def skipped(self, key: StatsKey) -> None:
        self._get(key).skipped += 1

    def error(self, key: StatsKey) -> None:
        self._get(key).shadow_errors += 1

    def compared(
        self,
        key: StatsKey,
        result: Comparison,
        primary: Answer,
        shadow: Answer,
        primary_latency_s: float,
        shadow_latency_s: float,
    ) -> None:
        t = self._get(key)
        t.samples += 1
        t.similarity_sum += result.similarity
        t.similarity_min = min(t.similarity_min, result.similarity)
        t.tool_agree += result.tools_agree
        t.tool_samples += result.tool_sample
        t.primary_prompt_tokens += primary.prompt_tokens
        t.primary_completion_tokens += primary.completion_tokens
        t.shadow_prompt_tokens += shadow.prompt_tokens
        t.shadow_completion_tokens += shadow.completion_tokens
        t.primary_latency_ms_sum += primary_latency_s * 1000.0
        t.shadow_latency_ms_sum += shadow_latency_s * 1000.0

    def snapshot(self) -> tuple[ShadowStats, ...]:
        return tuple(
            ShadowStats(
                primary=primary,
                shadow=shadow,
                epoch=epoch,
                samples=t.samples,
                similarity_sum=t.similarity_sum,
                similarity_min=t.similarity_min,
                tool_agree=t.tool_agree,
                tool_samples=t.tool_samples,
                primary_prompt_tokens=t.primary_prompt_tokens,
                primary_completion_tokens=t.primary_completion_tokens,
                shadow_prompt_tokens=t.shadow_prompt_tokens,
                shadow_completion_tokens=t.shadow_completion_tokens,
                primary_latency_ms_sum=t.primary_latency_ms_sum,
                shadow_latency_ms_sum=t.shadow_latency_ms_sum,
                shadow_errors=t.shadow_errors,
                skipped=t.skipped,
            )
            for (primary, shadow, epoch), t in sorted(self._totals.items())
        )
