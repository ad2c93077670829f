"""``tools/call`` under the session's pinned contract version.

Arguments are checked against the version's arguments schema before the backend sees them, and
the backend's ``CallToolResult`` against its result schema on the way back (its
``structuredContent``, when the version declares an output schema). Whatever goes wrong on the
backend's side -- a result that breaks the contract, a JSON-RPC error, a timeout, a backend that
is down, answers off-spec or dies mid-call, an open circuit -- becomes a tool result with
``isError: true`` and a sentence the model can act on; the MCP session itself never breaks.
The circuit breakers are the tool proxy's: per backend, and per backend, tool and version.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from holdfast.mcp.client import McpFault, McpRpcError
from sidecar.contracts import Compiled, Refusal, ToolBreakers
from sidecar.mcp.backends import Backends

RETRYABLE: Final = frozenset({"timeout", "unreachable", "backend_error"})
RETRY_DELAY_S: Final = 0.05
# Outcomes as the breakers know them (sidecar.contracts.breakers): an off-spec answer or a lost
# connection is a transport failure; a tool's own isError is an answer, so a success.
BREAKER_OUTCOME: Final = {
    "off_spec": "not_json",
    "session_lost": "unreachable",
    "tool_error": "ok",
}


@dataclass(frozen=True, slots=True)
class Outcome:
    outcome: str  # ok | tool_error | invalid_args | invalid_result | circuit_open | a fault
    result: dict[str, Any]


def is_error(text: str, *, outcome: str, ref: str) -> dict[str, Any]:
    """An MCP ``CallToolResult`` with ``isError``: what went wrong, in words for the model."""
    return {
        "isError": True,
        "content": [{"type": "text", "text": text}],
        "_meta": {"holdfast/outcome": outcome, "holdfast/contract": ref},
    }


class ToolCalls:
    def __init__(
        self,
        backends: Backends,
        breakers: ToolBreakers,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backends = backends
        self.breakers = breakers
        self.clock = clock

    async def call(
        self,
        compiled: Compiled,
        arguments: dict[str, Any],
        *,
        key: str,
        extra_headers: dict[str, str],
        request_id: str,
    ) -> Outcome:
        contract = compiled.contract
        ref = contract.ref
        if errors := compiled.args_errors(arguments):
            text = (
                f"the arguments do not match the {ref} contract, so the tool was not called: "
                + "; ".join(errors)
            )
            return Outcome("invalid_args", is_error(text, outcome="invalid_args", ref=ref))
        admission = self.breakers.admit(
            contract.backend, contract.tool, contract.version, self.clock()
        )
        if isinstance(admission, Refusal):
            text = _circuit_open_text(compiled, admission)
            return Outcome("circuit_open", is_error(text, outcome="circuit_open", ref=ref))
        try:
            outcome = await self._attempts(compiled, arguments, key, extra_headers, request_id)
        except BaseException:
            self.breakers.release(admission)
            raise
        self.breakers.record(
            admission, BREAKER_OUTCOME.get(outcome.outcome, outcome.outcome), self.clock()
        )
        return outcome

    async def _attempts(
        self,
        compiled: Compiled,
        arguments: dict[str, Any],
        key: str,
        extra_headers: dict[str, str],
        request_id: str,
    ) -> Outcome:
        contract = compiled.contract
        attempts = 2 if contract.idempotent else 1
        for attempt in range(1, attempts + 1):
            outcome = await self._once(compiled, arguments, key, extra_headers, request_id)
            if outcome.outcome not in RETRYABLE or attempt == attempts:
                return outcome
            await asyncio.sleep(RETRY_DELAY_S)
        raise AssertionError("unreachable")

    async def _once(
        self,
        compiled: Compiled,
        arguments: dict[str, Any],
        key: str,
        extra_headers: dict[str, str],
        request_id: str,
    ) -> Outcome:
        contract = compiled.contract
        ref = contract.ref
        try:
            answer = await self.backends.request(
                key,
                contract.backend,
                "tools/call",
                {"name": contract.tool, "arguments": arguments},
                timeout_s=contract.timeout_s,
                extra_headers=extra_headers,
                request_id=request_id,
            )
        except McpRpcError as exc:
            text = f"the {contract.tool} backend refused the call: {exc.message}"
            return Outcome("backend_rejected", is_error(text, outcome="backend_rejected", ref=ref))
        except McpFault as exc:
            text = f"the {contract.tool} tool could not be called: {exc.message}"
            return Outcome(exc.outcome, is_error(text, outcome=exc.outcome, ref=ref))
        return judge(compiled, answer)


def judge(compiled: Compiled, answer: dict[str, Any]) -> Outcome:
    """A backend's ``CallToolResult`` against the pinned contract version."""
    contract = compiled.contract
    ref = contract.ref
    content = answer.get("content")
    if not isinstance(content, list):
        text = f"the {contract.tool} backend answered off-spec (a result without content)"
        return Outcome("off_spec", is_error(text, outcome="off_spec", ref=ref))
    result = {k: v for k, v in answer.items() if k != "resultType"}
    if answer.get("isError") is True:
        return Outcome("tool_error", result)  # the tool's own words for the model, unchanged
    if contract.result_schema:
        structured = answer.get("structuredContent")
        errors = (
            ["(root): the result has no structuredContent"]
            if structured is None
            else compiled.result_errors(structured)
        )
        if errors:
            text = (
                f"the {contract.tool} backend returned a result that breaks the {ref} contract, "
                "so it was withheld: " + "; ".join(errors)
            )
            return Outcome("invalid_result", is_error(text, outcome="invalid_result", ref=ref))
    return Outcome("ok", result)


def _circuit_open_text(compiled: Compiled, refusal: Refusal) -> str:
    contract = compiled.contract
    wait = f"circuit open; next try in {refusal.retry_in:.0f}s"
    if refusal.by == "backend":
        return f"the {contract.tool} backend is failing and is not being called for now ({wait})"
    return (
        f"the {contract.tool} backend's last {refusal.failures} results broke the {contract.ref} "
        f"contract, so it is not being called for this contract version for now ({wait}); "
        "sessions pinned to other versions are not affected"
    )
