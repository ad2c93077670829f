"""Tool contracts on the chat path: the tools the agent declares and the calls the model makes.

Policies (the release's ``contract_policy``, else each contract's own):

* ``enforce`` -- a declared tool whose schema differs from the pinned one is refused (400
  ``tool_schema_mismatch``); a model tool call that breaks the pinned arguments schema is an
  error (502 ``tool_call_contract_violation``; streaming: the call's events are held back
  until the call is complete, then either relayed or replaced by an in-band error event and
  the rest of the stream dropped);
* ``rewrite`` -- a mismatching declared tool is rewritten to the pinned schema before the
  request goes upstream (``X-Holdfast-Contract-Rewritten``); model tool calls as ``enforce``;
* ``report`` -- nothing is changed or refused: non-streaming answers carry
  ``X-Holdfast-Contract-Violation``; streams (whose headers are gone) get an SSE comment line
  (``: holdfast-contract-violation ...``), which every SSE client ignores.

Every violation is counted per release and tool, whatever the policy.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from holdfast.contracts.compat import compare
from holdfast.contracts.schema import canonical
from holdfast.errorshape import error_body
from holdfast.logs import get_logger
from sidecar.config import ConfigState
from sidecar.contract_book import ContractBook, Pinned
from sidecar.contract_stats import ContractStats
from sidecar.errors import ToolCallViolation, ToolSchemaMismatch, spec_for
from sidecar.exchange import Exchange, Observer, Outcome
from sidecar.provider_json import provider_json
from sidecar.tool_calls import DONE, StreamedCalls, ToolCall, from_body, sse_data

log = get_logger(__name__)

VIOLATION_HEADER: Final = "X-Holdfast-Contract-Violation"
REWRITTEN_HEADER: Final = "X-Holdfast-Contract-Rewritten"
MAX_HELD_BYTES: Final = 4 << 20
BLOCKING: Final = frozenset({"enforce", "rewrite"})


@dataclass(frozen=True, slots=True)
class Violation:
    pinned: Pinned
    kind: str  # declared | call
    detail: str

    @property
    def label(self) -> str:
        return f"{self.pinned.ref} {self.kind}"


def _header(violations: Iterable[Violation]) -> str:
    return ", ".join(dict.fromkeys(v.label for v in violations))


def _add_header(exchange: Exchange, found: Iterable[Violation]) -> None:
    earlier = exchange.response_headers.get(VIOLATION_HEADER)
    exchange.response_headers[VIOLATION_HEADER] = ", ".join(filter(None, (earlier, _header(found))))


def check_call(call: ToolCall, pins: dict[str, Pinned]) -> Violation | None:
    """The violation of one model tool call against its pinned contract, if any."""
    pinned = pins.get(call.name)
    if pinned is None or pinned.compiled is None:
        return None
    if call.truncated:
        return Violation(pinned, "call", "arguments are larger than the sidecar checks")
    arguments = provider_json(call.arguments, "contract_arguments") if call.arguments else {}
    if arguments is None:
        return Violation(pinned, "call", "arguments are not JSON (or nest too deep)")
    errors = pinned.compiled.args_errors(arguments)
    return Violation(pinned, "call", "; ".join(errors)) if errors else None


class _CallObserver(Observer):
    def __init__(
        self, owner: ContractFilter, exchange: Exchange, pins: dict[str, Pinned], stream: bool
    ) -> None:
        self.owner = owner
        self.exchange = exchange
        self.pins = pins
        self.wants_events = stream
        self.calls = StreamedCalls()
        self.held: list[bytes] = []
        self.held_bytes = 0
        self.failed = False

    # -- non-streaming -------------------------------------------------------------------------

    def on_body(self, status: int, body: bytes) -> bytes:
        if status != 200:
            return body
        answer = provider_json(body, "contract_answer")
        if not isinstance(answer, dict):
            return body
        found = [v for c in from_body(answer) if (v := check_call(c, self.pins))]
        if found:
            self._judge(found)  # raises under a blocking policy
            _add_header(self.exchange, found)
        return body

    def _judge(self, found: list[Violation]) -> None:
        blocking = [v for v in found if v.pinned.policy in BLOCKING]
        for v in found:
            action = "rejected" if v.pinned.policy in BLOCKING else "reported"
            self.owner.count(self.exchange, v, action)
        if blocking:
            err = ToolCallViolation(
                "the model called "
                + "; ".join(
                    f"{v.pinned.ref} with arguments that break its contract: {v.detail}"
                    for v in blocking
                )
                + ". Nothing was changed; retry the request or check the prompt and tools"
            )
            earlier = self.exchange.response_headers.get(VIOLATION_HEADER)
            err.headers[VIOLATION_HEADER] = ", ".join(filter(None, (earlier, _header(found))))
            raise err

    # -- streaming -----------------------------------------------------------------------------

    def on_event(self, event: bytes) -> bytes | None:
        if self.failed:
            return None
        data = sse_data(event)
        completed: list[ToolCall] = []
        if data is not None and data.strip() == DONE:
            completed = self.calls.finish()
        elif data is not None:
            chunk = provider_json(data, "contract_event")
            if isinstance(chunk, dict):
                completed = self.calls.feed(chunk)
        found = [v for c in completed if (v := check_call(c, self.pins))]
        prefix = b""
        if found:
            try:
                self._judge(found)
            except ToolCallViolation as exc:
                self.failed = True
                self.held.clear()
                spec = spec_for(exc)
                return f"data: {json.dumps(error_body(exc.message, spec))}\n\n".encode()
            prefix = f": holdfast-contract-violation {_header(found)}\n\n".encode()
        if self._holding():
            self.held.append(prefix + event)
            self.held_bytes += len(event)
            if self.held_bytes <= MAX_HELD_BYTES:
                return None
        out = b"".join(self.held) + (b"" if self._holding() else prefix + event)
        self.held.clear()
        self.held_bytes = 0
        return out

    def _holding(self) -> bool:
        """Is a call under a blocking policy still arriving? Its events wait for its verdict."""
        for name in self.calls.open_names:
            pinned = self.pins.get(name)
            if pinned is not None and pinned.compiled is not None and pinned.policy in BLOCKING:
                return True
        return False

    def close(self, outcome: Outcome) -> None:
        # A stream cut before its end: count what arrived, there is no one left to tell.
        for call in self.calls.finish():
            violation = check_call(call, self.pins)
            if violation is not None:
                self.owner.count(self.exchange, violation, "reported")


class ContractFilter:
    name = "contracts"

    def __init__(self, config: ConfigState, book: ContractBook, stats: ContractStats) -> None:
        self.config = config
        self.book = book
        self.stats = stats

    def count(self, exchange: Exchange, violation: Violation, action: str) -> None:
        release = exchange.resolved.release.name
        p = violation.pinned
        self.stats.violation(release, p.tool, p.version, violation.kind, action)
        log.warning(
            "contract_violation",
            release=release,
            tool=p.tool,
            version=p.version,
            kind=violation.kind,
            action=action,
            detail=violation.detail[:300],
        )

    def open(self, exchange: Exchange) -> Observer | None:
        release = exchange.resolved.release
        if exchange.operation != "chat" or not release.contracts:
            return None
        pins = self.book.pinned(self.config.current, release)
        for p in pins.values():
            if p.compiled is None:
                self.stats.missing(release.name, p.tool, p.version)
        self._declared(exchange, pins)
        return _CallObserver(self, exchange, pins, exchange.stream)

    def _declared(self, exchange: Exchange, pins: dict[str, Pinned]) -> None:
        tools = exchange.body.get("tools")
        found: list[Violation] = []
        rewritten: list[str] = []
        for tool in tools if isinstance(tools, list) else ():
            function = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(function, dict):
                continue
            pinned = pins.get(function.get("name"))  # type: ignore[arg-type]
            if pinned is None or pinned.compiled is None:
                continue
            declared = function.get("parameters", {})
            if canonical(declared) == pinned.compiled.args_canonical:
                continue
            changes = compare(pinned.compiled.contract.args_schema, declared, "input")
            worst = sorted(changes, key=lambda c: c.severity != "breaking")
            detail = (
                f"{worst[0].path}: {worst[0].detail}" if worst else "parameters differ"
            ) + f" (and {len(changes) - 1} more)" * (len(changes) > 1)
            violation = Violation(pinned, "declared", detail)
            found.append(violation)
            if pinned.policy == "rewrite":
                function["parameters"] = copy.deepcopy(pinned.compiled.contract.args_schema)
                rewritten.append(pinned.ref)
        if not found:
            return
        refused = [v for v in found if v.pinned.policy == "enforce"]
        for v in found:
            action = {"enforce": "rejected", "rewrite": "rewritten"}.get(
                v.pinned.policy, "reported"
            )
            self.count(exchange, v, action)
        if refused:
            err = ToolSchemaMismatch(
                "; ".join(
                    f"tool {v.pinned.tool!r} is declared with parameters that differ from "
                    f"contract {v.pinned.ref} pinned by release "
                    f"{exchange.resolved.release.name}: {v.detail}"
                    for v in refused
                )
                + ". Declare the pinned schema (holdfastctl contract show TOOL VERSION)",
                param="tools",
            )
            err.headers[VIOLATION_HEADER] = _header(found)
            raise err
        _add_header(exchange, found)
        if rewritten:
            exchange.response_headers[REWRITTEN_HEADER] = ", ".join(rewritten)
