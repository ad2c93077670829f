"""The circuit breakers of ``POST /tools/{tool}``: one per backend, one per contract version.

Two kinds of evidence, kept apart so that one contract version's trouble never blocks another:

* the **backend** breaker (per backend URL) counts transport failures -- timeouts, refused or
  reset connections, HTTP 5xx, oversized or non-JSON answers. Those say the backend is unwell
  for every caller, so when it opens no call reaches that backend, whatever the version.
* the **contract** breaker (per backend, tool and version) counts results that break that
  version's result schema (``invalid_result``). A backend that moved to v2's result shape
  answers v1-pinned sessions with results v1 refuses: that opens v1's breaker only, while
  v2-pinned sessions keep calling it. For the backend breaker such an answer is a success: it
  answered, in time, with JSON.

A call needs both to let it through; in half-open state each lets one probe through at a time.
Pure state over the caller's clock, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from holdfast.contracts.breaker import (
    DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_RESET_AFTER_S,
    CircuitBreaker,
)

TRANSPORT_FAILURES: Final = frozenset(
    {"timeout", "unreachable", "backend_error", "too_large", "not_json"}
)
CONTRACT_FAILURES: Final = frozenset({"invalid_result"})
MAX_BREAKERS: Final = 4096  # per kind; closed ones are forgotten first when it is reached

ContractKey = tuple[str, str, str]  # backend URL, tool, version


@dataclass(frozen=True, slots=True)
class Admission:
    """A call let through: both breakers, to be told the outcome (or released)."""

    backend: CircuitBreaker
    contract: CircuitBreaker


@dataclass(frozen=True, slots=True)
class Refusal:
    by: str  # "backend" | "contract"
    retry_in: float
    failures: int


class ToolBreakers:
    def __init__(
        self,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        reset_after: float = DEFAULT_RESET_AFTER_S,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.reset_after = reset_after
        self.backends: dict[str, CircuitBreaker] = {}
        self.contracts: dict[ContractKey, CircuitBreaker] = {}

    def _get(self, table: dict[Any, CircuitBreaker], key: Any) -> CircuitBreaker:
        breaker = table.get(key)
        if breaker is None:
            if len(table) >= MAX_BREAKERS:
                for stale in [k for k, b in table.items() if b.state == "closed"]:
                    del table[stale]
            breaker = table[key] = CircuitBreaker(self.failure_threshold, self.reset_after)
        return breaker

    def admit(self, backend: str, tool: str, version: str, now: float) -> Admission | Refusal:
        transport = self._get(self.backends, backend)
        if not transport.allow(now):
            return Refusal("backend", transport.retry_in(now), transport.failures)
        contract = self._get(self.contracts, (backend, tool, version))
        if not contract.allow(now):
            transport.release_probe()
            return Refusal("contract", contract.retry_in(now), contract.failures)
        return Admission(transport, contract)

    @staticmethod
    def record(admission: Admission, outcome: str, now: float) -> None:
        """The outcome of an admitted call, as the proxy judged it."""
        if outcome == "ok":
            admission.backend.success()
            admission.contract.success()
        elif outcome in CONTRACT_FAILURES:
            admission.backend.success()
            admission.contract.failure(now)
        elif outcome in TRANSPORT_FAILURES:
            admission.backend.failure(now)
            admission.contract.release_probe()
        else:  # tool_backend.NEUTRAL: a 4xx, a refused host, a redirect say nothing of either
            ToolBreakers.release(admission)

    @staticmethod
    def release(admission: Admission) -> None:
        """An admitted call ended without a verdict (e.g. the agent went away)."""
        admission.backend.release_probe()
        admission.contract.release_probe()

    def view(self, now: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """For /status: backend breakers by URL, contract breakers by ``tool@version``."""
        backends = {url: breaker_view(b, now) for url, b in sorted(self.backends.items())}
        contracts = {  # a contract version names one backend: tool@version is unique
            f"{tool}@{version}": {"backend": url, **breaker_view(b, now)}
            for (url, tool, version), b in sorted(self.contracts.items())
        }
        return backends, contracts


def breaker_view(breaker: CircuitBreaker, now: float) -> dict[str, Any]:
    return {
        "state": breaker.state,
        "failures_in_a_row": breaker.failures,
        "times_opened": breaker.times_opened,
        "retry_in_s": round(breaker.retry_in(now), 3),
    }
