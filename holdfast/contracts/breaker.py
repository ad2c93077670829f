"""A circuit breaker per tool backend: a pure state machine driven by the caller's clock.

closed: calls go through; ``failure_threshold`` failures in a row open it.
open: calls are refused at once for ``reset_after`` seconds, then one probe is let through.
half-open: the probe's success closes it, its failure opens it again for another period.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

State = Literal["closed", "open", "half_open"]
DEFAULT_FAILURE_THRESHOLD: Final = 5
DEFAULT_RESET_AFTER_S: Final = 10.0
STATE_VALUE: Final[dict[State, int]] = {"closed": 0, "half_open": 1, "open": 2}


@dataclass(slots=True)
class CircuitBreaker:
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    reset_after: float = DEFAULT_RESET_AFTER_S
    state: State = "closed"
    failures: int = 0
    opened_at: float = 0.0
    probing: bool = field(default=False)
    times_opened: int = 0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.reset_after <= 0:
            raise ValueError("a breaker needs failure_threshold >= 1 and reset_after > 0")

    def allow(self, now: float) -> bool:
        """May a call go out now? In half-open state only one probe at a time is let through."""
        if self.state == "closed":
            return True
        if self.state == "open":
            if now - self.opened_at < self.reset_after:
                return False
            self.state = "half_open"
            self.probing = False
        if self.probing:
            return False
        self.probing = True
        return True

    def retry_in(self, now: float) -> float:
        return max(0.0, self.reset_after - (now - self.opened_at)) if self.state == "open" else 0.0

    def success(self) -> None:
        self.state, self.failures, self.probing = "closed", 0, False

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.failure_threshold:
            if self.state != "open":
                self.times_opened += 1
            self.state, self.opened_at, self.probing = "open", now, False

    def release_probe(self) -> None:
        """A let-through call ended with neither verdict (e.g. the agent went away)."""
        self.probing = False
