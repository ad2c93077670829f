"""Settings of prompt evaluation and of the activation gate's case count (configsvc side).

An evaluation is one synchronous HTTP request: configsvc runs every case before it answers.
Its duration is bounded by ``bound(cases)``: the cases run ``concurrency`` at a time, each for
at most ``case_timeout``, and the whole run for at most ``timeout``. configsvc advertises these
(``GET /v1/prompts/{name}/{version}/eval``) so that ``holdfastctl prompt eval`` waits as long
as the server may take, rather than its usual ``--timeout``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

DEFAULT_MIN_CASES: Final = 5  # the smallest run where 0.8 can pass with a failure (4/5)
DEFAULT_CASE_TIMEOUT: Final = 60.0
DEFAULT_CONCURRENCY: Final = 4
DEFAULT_EVAL_TIMEOUT: Final = 600.0
ENV_MIN_CASES: Final = "HOLDFAST_PROMPT_MIN_CASES"
ENV_CASE_TIMEOUT: Final = "HOLDFAST_EVAL_CASE_TIMEOUT"
ENV_CONCURRENCY: Final = "HOLDFAST_EVAL_CONCURRENCY"
ENV_EVAL_TIMEOUT: Final = "HOLDFAST_EVAL_TIMEOUT"
MAX_EVAL_TIMEOUT: Final = 3600.0
CLIENT_MARGIN_S: Final = 30.0  # the etcd write and the network, beyond the cases' own bound
WAVE_SLACK_S: Final = 5.0  # lets the last wave's own per-case timeouts fire first


class PromptSettingsError(ValueError):
    """A prompt/eval setting that cannot be used; the message names its variable."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalSettings:
    min_cases: int = DEFAULT_MIN_CASES  # fewest cases an evaluation needs to pass the gate
    case_timeout: float = DEFAULT_CASE_TIMEOUT
    concurrency: int = DEFAULT_CONCURRENCY
    timeout: float = DEFAULT_EVAL_TIMEOUT  # the whole run, whatever the case count

    def __post_init__(self) -> None:
        if not 1 <= self.min_cases <= 200:
            raise PromptSettingsError(f"${ENV_MIN_CASES} must be an integer from 1 to 200")
        if not 0 < self.case_timeout <= 600:
            raise PromptSettingsError(f"${ENV_CASE_TIMEOUT} must be from 0 to 600 seconds")
        if not 1 <= self.concurrency <= 64:
            raise PromptSettingsError(f"${ENV_CONCURRENCY} must be an integer from 1 to 64")
        if not 0 < self.timeout <= MAX_EVAL_TIMEOUT:
            raise PromptSettingsError(
                f"${ENV_EVAL_TIMEOUT} must be from 0 to {MAX_EVAL_TIMEOUT:g} seconds"
            )

    def bound(self, cases: int) -> float:
        """The longest an evaluation of ``cases`` cases may run on the server."""
        waves = math.ceil(max(cases, 1) / self.concurrency)
        return min(self.timeout, waves * self.case_timeout + WAVE_SLACK_S)

    def public(self) -> dict[str, Any]:
        return {
            "min_cases": self.min_cases,
            "case_timeout_s": self.case_timeout,
            "concurrency": self.concurrency,
            "timeout_s": self.timeout,
        }

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> EvalSettings:
        return cls(
            min_cases=int(_number(environ, ENV_MIN_CASES, DEFAULT_MIN_CASES, integer=True)),
            case_timeout=_number(environ, ENV_CASE_TIMEOUT, DEFAULT_CASE_TIMEOUT),
            concurrency=int(_number(environ, ENV_CONCURRENCY, DEFAULT_CONCURRENCY, integer=True)),
            timeout=_number(environ, ENV_EVAL_TIMEOUT, DEFAULT_EVAL_TIMEOUT),
        )


def client_wait(limits: Mapping[str, Any] | None, cases: int, floor: float) -> float:
    """How long ``holdfastctl prompt eval`` waits: the server's bound for ``cases`` plus a
    margin, never less than ``floor`` (its --timeout). ``limits`` is what the server advertised
    (``EvalSettings.public``); None (an older server) means the defaults."""
    settings = EvalSettings()
    if limits:
        try:
            settings = EvalSettings(
                min_cases=int(limits.get("min_cases", DEFAULT_MIN_CASES)),
                case_timeout=float(limits.get("case_timeout_s", DEFAULT_CASE_TIMEOUT)),
                concurrency=int(limits.get("concurrency", DEFAULT_CONCURRENCY)),
                timeout=float(limits.get("timeout_s", DEFAULT_EVAL_TIMEOUT)),
            )
        except (TypeError, ValueError):
            settings = EvalSettings(timeout=MAX_EVAL_TIMEOUT, case_timeout=600.0)
    return max(floor, settings.bound(cases) + CLIENT_MARGIN_S)


def _number(
    environ: Mapping[str, str], name: str, default: float, *, integer: bool = False
) -> float:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        return float(int(text)) if integer else float(text)
    except ValueError as exc:
        kind = "an integer" if integer else "a number"
        raise PromptSettingsError(f"${name} is not {kind}: {text!r:.40}") from exc
