"""``POST /tools/{tool}``: call a tool's backend under the contract the session's release pins.

Arguments are validated before the call and the result after it. Whatever goes wrong on the
backend's side (a result that breaks the contract, a timeout, an unreachable or failing
backend, an oversized answer, an open circuit) the agent gets HTTP 200 with an MCP-style tool
result ``{"isError": true, "content": [{"type": "text", "text": ...}]}`` that the model can
reason about -- never an exception. Only the agent's own mistakes (a body that is not a JSON
object, a tool its release does not pin) are HTTP errors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

from aiohttp import web

from holdfast.contracts.breaker import DEFAULT_FAILURE_THRESHOLD, DEFAULT_RESET_AFTER_S
from holdfast.json_limits import DEFAULT_MAX_JSON_DEPTH, JsonRefused, loads_bounded
from holdfast.keyspace.keys import NAME_RE
from holdfast.logs import get_logger
from sidecar.config import ConfigState
from sidecar.contracts.backend import BackendAnswer, ToolBackend
from sidecar.contracts.book import Compiled, ContractBook
from sidecar.contracts.breakers import Refusal, ToolBreakers
from sidecar.contracts.filter import VIOLATION_HEADER
from sidecar.contracts.stats import ContractStats
from sidecar.errors import (
    BodyTooLarge,
    ContractUnavailable,
    InvalidRequest,
    NotFound,
    SidecarError,
    ToolNotPinned,
    ToolNotProxied,
    spec_for,
)
from sidecar.pins import Pinning
from sidecar.pipeline import REQUEST_ID_KEY, served_by
from sidecar.routing import Resolved, session_id

log = get_logger(__name__)

CONTRACT_HEADER: Final = "X-Holdfast-Contract"
OUTCOME_HEADER: Final = "X-Holdfast-Tool-Outcome"


class ToolSpan(Protocol):
    """The trace of one tool call (sidecar.tracing.ToolSpans makes them)."""

    def context_headers(self) -> dict[str, str]: ...
    def served(self, resolved: Resolved, contract: str, backend: str, outcome: str) -> None: ...
    def failed(self, code: str) -> None: ...
    def end(self) -> None: ...


class ToolTracer(Protocol):
    def tool_call(self, tool: str, headers: Mapping[str, str], request_id: str) -> ToolSpan: ...


def tool_result(result: Any) -> dict[str, Any]:
    """An MCP ``CallToolResult`` for a good result (structured when it is an object)."""
    body: dict[str, Any] = {
        "isError": False,
        "content": [{"type": "text", "text": json.dumps(result, ensure_ascii=False)}],
    }
    if isinstance(result, dict):
        body["structuredContent"] = result
    return body


def tool_error(text: str, *, outcome: str, ref: str) -> dict[str, Any]:
    """An MCP ``CallToolResult`` with ``isError``: what went wrong, in words for the model."""
    return {
        "isError": True,
        "content": [{"type": "text", "text": text}],
        "_meta": {"holdfast": {"outcome": outcome, "contract": ref}},
    }


class ToolProxy:
    def __init__(
        self,
        agent: str,
        config: ConfigState,
        pinning: Pinning,
        book: ContractBook,
        stats: ContractStats,
        *,
        max_body_bytes: int,
        max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
        backend: ToolBackend | None = None,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        reset_after: float = DEFAULT_RESET_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
        tracer: ToolTracer | None = None,
    ) -> None:
        self.tracer = tracer  # None: tracing off
        self.agent = agent
        self.config = config
        self.pinning = pinning
        self.book = book
        self.stats = stats
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth
        self.backend = backend or ToolBackend()
        self.clock = clock
        self.breakers = ToolBreakers(failure_threshold, reset_after)

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/tools/{tool}", self.call)]

    async def lifecycle(self, _app: web.Application) -> Any:
        """For ``app.cleanup_ctx``: the backend client lives as long as the app."""
        await self.backend.start()
        yield
        await self.backend.close()

    async def _arguments(self, request: web.Request) -> dict[str, Any]:
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            raise BodyTooLarge(f"tool arguments are over the {self.max_body_bytes}-byte limit")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:
            raise BodyTooLarge(
                f"tool arguments are over the {self.max_body_bytes}-byte limit"
            ) from exc
        try:
            arguments = loads_bounded(raw, self.max_json_depth)
        except JsonRefused as exc:
            raise InvalidRequest(f"tool arguments are not valid JSON: {exc}") from exc
        if not isinstance(arguments, dict):
            raise InvalidRequest("tool arguments must be a JSON object")
        return arguments

    def _contract(self, tool: str, resolved: Resolved) -> Compiled:
        release = resolved.release
        version = release.contracts.get(tool)
        if version is None:
            pinned = ", ".join(release.contracts) or "none"
            raise ToolNotPinned(
                f"release {release.name} pins no contract for tool {tool!r} (pinned: {pinned})"
            )
        compiled = self.book.compiled(self.config.current, tool, version)
        if compiled is None:
            self.stats.missing(release.name, tool, version)
            raise ContractUnavailable(
                f"release {release.name} pins {tool}@{version}, which this sidecar has not "
                "received (or refused); see /status"
            )
        if not compiled.contract.backend:
            raise ToolNotProxied(
                f"contract {tool}@{version} has no backend: the agent runs this tool itself"
            )
        return compiled

    async def call(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        tool = request.match_info["tool"]
        if not NAME_RE.fullmatch(tool):
            raise NotFound(f"no tool {tool!r:.80}")
        if self.tracer is None:
            return await self._call(request, tool, started, None)
        span = self.tracer.tool_call(tool, request.headers, request[REQUEST_ID_KEY])
        try:
            return await self._call(request, tool, started, span)
        except SidecarError as exc:
            span.failed(spec_for(exc).code)
            raise
        finally:
            span.end()

    async def _call(
        self, request: web.Request, tool: str, started: float, span: ToolSpan | None
    ) -> web.Response:
        arguments = await self._arguments(request)
        snapshot, session = self.config.current, session_id(request.headers, None)
        resolved = self.pinning.lookup(snapshot, self.agent, session)
        if resolved is None:  # a first turn: settled with etcd (sidecar.pin_claim)
            resolved = await self.pinning.first_turn(snapshot, self.agent, session)
        compiled = self._contract(tool, resolved)
        contract = compiled.contract
        headers = served_by(resolved) | {CONTRACT_HEADER: contract.ref}
        trace = span.context_headers() if span is not None else None
        outcome, body = await self._execute(compiled, arguments, request[REQUEST_ID_KEY], trace)
        if span is not None:
            span.served(resolved, contract.ref, contract.backend, outcome)
        if outcome in ("invalid_args", "invalid_result"):
            headers[VIOLATION_HEADER] = f"{contract.ref} {outcome.removeprefix('invalid_')}"
            kind = "args" if outcome == "invalid_args" else "result"
            self.stats.violation(resolved.release.name, tool, contract.version, kind, "degraded")
        headers[OUTCOME_HEADER] = outcome
        elapsed = time.perf_counter() - started
        self.stats.tool_call(resolved.release.name, tool, contract.version, outcome, elapsed)
        if outcome != "ok":
            log.warning(
                "tool_call_degraded",
                tool=tool,
                version=contract.version,
                release=resolved.release.name,
                outcome=outcome,
            )
        return web.json_response(body, headers=headers)

    async def _execute(
        self,
        compiled: Compiled,
        arguments: dict[str, Any],
        request_id: str,
        trace: Mapping[str, str] | None = None,
    ) -> tuple[str, dict[str, Any]]:
        contract = compiled.contract
        ref = contract.ref
        if errors := compiled.args_errors(arguments):
            text = f"the arguments do not match the {ref} contract: " + "; ".join(errors)
            return "invalid_args", tool_error(text, outcome="invalid_args", ref=ref)
        admission = self.breakers.admit(
            contract.backend, contract.tool, contract.version, self.clock()
        )
        if isinstance(admission, Refusal):
            text = _circuit_open_text(compiled, admission)
            return "circuit_open", tool_error(text, outcome="circuit_open", ref=ref)
        try:
            answer = await self.backend.call(
                contract.backend,
                arguments,
                timeout_s=contract.timeout_s,
                idempotent=contract.idempotent,
                request_id=request_id,
                extra_headers=trace,
            )
        except BaseException:
            self.breakers.release(admission)
            raise
        outcome, body = self._judge(compiled, answer)
        self.breakers.record(admission, outcome, self.clock())
        self.stats.circuit_state(contract.backend, admission.backend.state)
        self.stats.result_circuit_state(contract.tool, contract.version, admission.contract.state)
        return outcome, body

    @staticmethod
    def _judge(compiled: Compiled, answer: BackendAnswer) -> tuple[str, dict[str, Any]]:
        ref = compiled.contract.ref
        if answer.outcome != "ok":
            return answer.outcome, tool_error(answer.message, outcome=answer.outcome, ref=ref)
        if errors := compiled.result_errors(answer.result):
            text = (
                f"the {compiled.contract.tool} backend returned a result that breaks the {ref} "
                "contract, so it was withheld: " + "; ".join(errors)
            )
            return "invalid_result", tool_error(text, outcome="invalid_result", ref=ref)
        return "ok", tool_result(answer.result)


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
