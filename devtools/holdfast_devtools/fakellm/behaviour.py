"""Per-model behaviour of the fake upstream: delays, injected faults, usage and reply shape.

A ``Behaviour`` is validated on construction, so the CLI defaults and a control-API override go
through the same checks. ``BehaviourTable`` holds the defaults, the per-model overrides, the
per-model request counters that make injected errors deterministic (see ``error_due``) and the
per-model stats that ``/_control/stats`` reports.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Final

MAX_DELAY_MS: Final = 600_000.0
MAX_COMPLETION_TOKENS: Final = 4096
MAX_RETRY_AFTER_S: Final = 3600
DEFAULT_COMPLETION_TOKENS: Final = 12
DEFAULT_ERROR_STATUS: Final = 500
DEFAULT_RETRY_AFTER_S: Final = 1
# Enough precision for any rate a person types, and it keeps the schedule in exact integers.
_RATE_DENOMINATOR_LIMIT: Final = 1_000_000
MAX_RAW_BODY: Final = 1024 * 1024


class BehaviourError(ValueError):
    """A behaviour field with an unknown name or an unusable value; the message says which."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Behaviour:
    latency_ms: float = 0.0  # whole-response delay of a non-streaming reply
    first_byte_ms: float = 0.0  # delay before the first byte of a streamed reply
    token_interval_ms: float = 0.0  # delay between streamed chunks
    error_rate: float = 0.0  # share of requests answered with error_status (see error_due)
    error_status: int = DEFAULT_ERROR_STATUS
    retry_after_s: int = DEFAULT_RETRY_AFTER_S  # Retry-After sent with an injected 429
    stall_after_tokens: int | None = None  # stream goes silent after N tokens, stays open
    reset_after_tokens: int | None = None  # stream's connection is aborted after N tokens
    omit_usage: bool = False  # never report usage (accounting tests)
    tool_calls: bool = False  # answer with a tool call whenever the request declares tools
    # call every tool the last user message names as "call:<name>", in parallel
    parallel_tool_calls: bool = False
    # of each prompt, this many tokens reported as read from the provider's prompt cache
    cached_tokens: int = 0
    completion_tokens: int = DEFAULT_COMPLETION_TOKENS  # reply length before max_tokens
    # Drift confined to one kind of query: a last user message containing ``drift_marker``
    # gets ``drift_completion_tokens`` instead (empty marker: off).
    drift_marker: str = ""
    drift_completion_tokens: int = 1
    # Answer chat completions with these exact bytes (hostile-provider tests): the whole body
    # of a non-streaming reply, or the data of one SSE event before [DONE]. Empty: off.
    raw_body: str = ""

    def __post_init__(self) -> None:
        for name in ("latency_ms", "first_byte_ms", "token_interval_ms"):
            _check_number(name, getattr(self, name), 0.0, MAX_DELAY_MS)
        _check_number("error_rate", self.error_rate, 0.0, 1.0)
        _check_int("error_status", self.error_status, 400, 599)
        _check_int("retry_after_s", self.retry_after_s, 0, MAX_RETRY_AFTER_S)
        for name in ("stall_after_tokens", "reset_after_tokens"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 0, MAX_COMPLETION_TOKENS)
        for name in ("omit_usage", "tool_calls", "parallel_tool_calls"):
            if not isinstance(getattr(self, name), bool):
                raise BehaviourError(f"{name} must be true or false")
        _check_int("completion_tokens", self.completion_tokens, 1, MAX_COMPLETION_TOKENS)
        _check_int("cached_tokens", self.cached_tokens, 0, 1_000_000)
        _check_int(
            "drift_completion_tokens", self.drift_completion_tokens, 1, MAX_COMPLETION_TOKENS
        )
        if not isinstance(self.raw_body, str) or len(self.raw_body) > MAX_RAW_BODY:
            raise BehaviourError(f"raw_body must be a string of at most {MAX_RAW_BODY} characters")
        if not isinstance(self.drift_marker, str) or len(self.drift_marker) > 200:
            raise BehaviourError("drift_marker must be a string of at most 200 characters")

    def length_for(self, user_text: str) -> int:
        if self.drift_marker and self.drift_marker in user_text:
            return self.drift_completion_tokens
        return self.completion_tokens

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


FIELD_NAMES: Final = frozenset(f.name for f in dataclasses.fields(Behaviour))


def _check_number(name: str, value: object, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise BehaviourError(f"{name} must be a number from {low:g} to {high:g}, got {value!r}")


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BehaviourError(f"{name} must be an integer from {low} to {high}, got {value!r}")


def behaviour_from_json(fields: object, base: Behaviour) -> Behaviour:
    """``base`` with the given fields replaced; unknown names and bad values raise."""
    if not isinstance(fields, Mapping):
        raise BehaviourError("behaviour must be a JSON object")
    unknown = sorted(str(name) for name in fields if name not in FIELD_NAMES)
    if unknown:
        raise BehaviourError(f"unknown behaviour field(s): {', '.join(unknown)}")
    return dataclasses.replace(base, **{str(k): v for k, v in fields.items()})


@lru_cache(maxsize=256)
def _rate_fraction(rate: float) -> Fraction:
    return Fraction(rate).limit_denominator(_RATE_DENOMINATOR_LIMIT)


def error_due(request_number: int, rate: float) -> bool:
    """Whether the model's ``request_number``-th request (1-based) gets the injected error.

    Request n fails exactly when floor(n * rate) > floor((n - 1) * rate): rate 0.25 fails
    requests 4, 8, 12…, rate 0.5 every second one, rate 1 all, rate 0 none. Over any run of
    requests the failures are within one of rate * count, with no randomness to flake a test.
    """
    if rate <= 0.0:
        return False
    fraction = _rate_fraction(rate)
    num, den = fraction.numerator, fraction.denominator
    return (request_number * num) // den > ((request_number - 1) * num) // den


@dataclass(slots=True)
class ModelStats:
    requests: int = 0
    errors: int = 0  # injected errors
    streams_started: int = 0
    streams_completed: int = 0
    streams_cancelled: int = 0  # the client went away before the end
    streams_reset: int = 0  # aborted on purpose by reset_after_tokens
    in_flight: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0  # tokens actually sent

    def clear(self) -> None:
        """Zero the counters but in_flight: those requests are still running and will finish."""
        in_flight = self.in_flight
        for name in _STATS_FIELDS:
            setattr(self, name, 0)
        self.in_flight = in_flight

    def to_json(self) -> dict[str, int]:
        return dataclasses.asdict(self)


_STATS_FIELDS: Final = tuple(f.name for f in dataclasses.fields(ModelStats))


class BehaviourTable:
    """Per-model state: defaults and overrides, the counters behind ``error_due``, and stats."""

    def __init__(self, defaults: Behaviour) -> None:
        self.defaults = defaults
        self.stats: dict[str, ModelStats] = {}
        self._overrides: dict[str, Behaviour] = {}
        self._counters: dict[str, int] = {}

    def get(self, model: str) -> Behaviour:
        return self._overrides.get(model, self.defaults)

    def is_overridden(self, model: str) -> bool:
        return model in self._overrides

    def set(self, model: str, fields: object) -> Behaviour:
        """Override ``model`` with the CLI defaults plus ``fields``; restarts its error count."""
        behaviour = behaviour_from_json(fields, self.defaults)
        self._overrides[model] = behaviour
        self._counters.pop(model, None)
        return behaviour

    def clear(self, model: str) -> bool:
        self._counters.pop(model, None)
        return self._overrides.pop(model, None) is not None

    def reset(self) -> None:
        """Forget overrides, error counts and stats (stats of requests still running stay)."""
        self._overrides.clear()
        self._counters.clear()
        for stats in self.stats.values():
            stats.clear()
        self.stats = {model: s for model, s in self.stats.items() if s.in_flight}

    def admit(self, model: str) -> tuple[Behaviour, ModelStats, bool]:
        """Count one more request: the model's behaviour, stats, and whether it must fail."""
        stats = self.stats.get(model)
        if stats is None:
            stats = self.stats[model] = ModelStats()
        stats.requests += 1
        behaviour = self._overrides.get(model, self.defaults)
        number = self._counters[model] = self._counters.get(model, 0) + 1
        fails = error_due(number, behaviour.error_rate)
        if fails:
            stats.errors += 1
        return behaviour, stats, fails
