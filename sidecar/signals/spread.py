"""What the tracked sessions of each release add up to, kept as sessions come, grow and go.

The health publisher reads it at every beat; walking the up to 10,000 tracked sessions there
instead cost the event loop milliseconds per beat (a stall that grew with the sessions). Each
change of a session here takes out what it added before and adds what it adds now, so a beat
costs O(releases). Latency is kept in whole microseconds, so that taking out exactly undoes
putting in, however long a release lives.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from holdfast.keyspace.session_spread import (
    SESSION_LATENCY_BOUNDS_MS,
    SESSION_TOKEN_BOUNDS,
    SessionSpread,
)
from holdfast.keyspace.signals import bucket_index


def _zeros(bounds: tuple[float, ...]) -> list[int]:
    return [0] * (len(bounds) + 1)


@dataclass(slots=True)
class _Spread:
    sessions: int = 0
    tokens: list[int] = field(default_factory=lambda: _zeros(SESSION_TOKEN_BOUNDS))
    latency: list[int] = field(default_factory=lambda: _zeros(SESSION_LATENCY_BOUNDS_MS))
    tokens_sum: int = 0
    latency_us: int = 0


class SpreadTally:
    def __init__(self) -> None:
        self._of: dict[str, _Spread] = {}

    def add(self, release: str, tokens: int, latency_ms: float) -> None:
        """A session of ``release`` that has used ``tokens`` and ``latency_ms`` so far."""
        spread = self._of.get(release)
        if spread is None:
            spread = self._of[release] = _Spread()
        self._apply(spread, tokens, latency_ms, 1)

    def remove(self, release: str, tokens: int, latency_ms: float) -> None:
        """Take out a session exactly as it was last added (it grew, moved or was dropped)."""
        spread = self._of.get(release)
        if spread is None:
            return
        self._apply(spread, tokens, latency_ms, -1)
        if spread.sessions <= 0:
            del self._of[release]

    @staticmethod
    def _apply(spread: _Spread, tokens: int, latency_ms: float, sign: int) -> None:
        spread.sessions += sign
        spread.tokens[bucket_index(SESSION_TOKEN_BOUNDS, tokens)] += sign
        spread.latency[bucket_index(SESSION_LATENCY_BOUNDS_MS, latency_ms)] += sign
        spread.tokens_sum += sign * tokens
        spread.latency_us += sign * round(latency_ms * 1000)

    def spreads(self) -> tuple[SessionSpread, ...]:
        return tuple(
            SessionSpread(
                release=release,
                sessions=s.sessions,
                tokens=tuple(s.tokens),
                latency_ms=tuple(s.latency),
                tokens_sum=s.tokens_sum,
                latency_ms_sum=s.latency_us / 1000,
            )
            for release, s in sorted(self._of.items())
        )
