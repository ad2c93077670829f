"""Tool contracts on the chat path: the tools the agent declares and the calls the model makes.

Policies (the release's ``contract_policy``, else each contract's own):

* ``enforce`` -- a declared tool whose parameters differ from the pinned schema is refused (400
  ``tool_schema_mismatch``; annotations such as ``description`` or ``title`` may differ); a model
  tool call that breaks the pinned arguments schema is an error (502
  ``tool_call_contract_violation``; streaming: events are held back from a checked call's first
  fragment until its choice finishes, then either relayed or replaced by an in-band error event
  and the rest of the stream dropped; past ``MAX_HELD_BYTES`` held, the stream ends with that
  error too -- a call is never relayed unchecked);
* ``rewrite`` -- a mismatching declared tool is rewritten to the pinned schema before the
  request goes upstream (``X-Holdfast-Contract-Rewritten``); model tool calls as ``enforce``;
* ``report`` -- nothing is changed or refused: non-streaming answers carry
  ``X-Holdfast-Contract-Violation``; streams (whose headers are gone) get an SSE comment line
  (``: holdfast-contract-violation ...``), which every SSE client ignores.

Every violation is counted per release and tool, whatever the policy.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from typing import Final

from holdfast.dialects import Answer, EventView, StreamDecoder, ToolCall
from holdfast.logs import get_logger
from sidecar.config import ConfigState
from sidecar.contracts.book import ContractBook, Pinned
from sidecar.contracts.checks import Violation, check_call, declared_mismatch
from sidecar.contracts.stats import ContractStats
from sidecar.errors import ToolCallViolation, ToolSchemaMismatch, spec_for
from sidecar.pipeline import Exchange, Observer

log = get_logger(__name__)

VIOLATION_HEADER: Final = "X-Holdfast-Contract-Violation"
REWRITTEN_HEADER: Final = "X-Holdfast-Contract-Rewritten"
MAX_HELD_BYTES: Final = 4 << 20
BLOCKING: Final = frozenset({"enforce", "rewrite"})


def _header(violations: Iterable[Violation]) -> str:
    return ", ".join(dict.fromkeys(v.label for v in violations))


def _add_header(exchange: Exchange, found: Iterable[Violation]) -> None:
    earlier = exchange.response_headers.get(VIOLATION_HEADER)
    exchange.response_headers[VIOLATION_HEADER] = ", ".join(filter(None, (earlier, _header(found))))


class _CallObserver(Observer):
    def __init__(
        self, owner: ContractFilter, exchange: Exchange, pins: dict[str, Pinned], stream: bool
    ) -> None:
        self.owner = owner
        self.exchange = exchange
        self.pins = pins
        self.rewrites = stream
        self._fallback: StreamDecoder | None = None
        self.held: list[bytes] = []
        self.held_bytes = 0
        self.failed = False

    @property
    def decoder(self) -> StreamDecoder:
        """The relay's decoder: which calls are still arriving, after each event it decoded.
        Read when used: a translated stream's is the provider's, known once the relay starts."""
        if self.exchange.decoder is not None:
            return self.exchange.decoder
        if self._fallback is None:
            self._fallback = self.exchange.dialect.stream_decoder()
        return self._fallback

    # -- non-streaming -------------------------------------------------------------------------

    def on_answer(self, status: int, answer: Answer | None) -> None:
        if status != 200 or answer is None:
            return
        found = [v for c in answer.tool_calls if (v := check_call(c, self.pins))]
        if found:
            self._judge(found)  # raises under a blocking policy
            _add_header(self.exchange, found)

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

    def on_event(self, view: EventView, data: bytes | None) -> bytes | None:
        if self.failed:
            return None
        event = data or b""
        found = [v for c in view.calls if (v := check_call(c, self.pins))]
        prefix = b""
        if found:
            try:
                self._judge(found)
            except ToolCallViolation as exc:
                self.failed = True
                self.held.clear()
                return self._error_event(exc)
            prefix = f": holdfast-contract-violation {_header(found)}\n\n".encode()
        if self._holding():
            self.held.append(prefix + event)
            self.held_bytes += len(prefix) + len(event)
            if self.held_bytes <= MAX_HELD_BYTES:
                return None
            return self._give_up()
        out = b"".join(self.held) + prefix + event
        self.held.clear()
        self.held_bytes = 0
        return out or None

    def _error_event(self, exc: ToolCallViolation) -> bytes:
        spec = spec_for(exc)
        return self.exchange.dialect.stream_error(exc.message, spec.kind, spec.code)

    def _blocking(self, name: str) -> Pinned | None:
        pinned = self.pins.get(name)
        if pinned is not None and pinned.compiled is not None and pinned.policy in BLOCKING:
            return pinned
        return None

    def _holding(self) -> bool:
        """Is a call under a blocking policy still arriving? Its events wait for its verdict.
        A call whose name has not arrived yet may be one: held too, if any pinned tool is."""
        for name in self.decoder.open_calls:
            if self._blocking(name) is not None:
                return True
            if not name and any(self._blocking(tool) for tool in self.pins):
                return True
        return False

    def _give_up(self) -> bytes:
        """Too much held to wait for a verdict: end the stream, never relay a call unchecked."""
        self.failed = True
        self.held.clear()
        names = [n for n in self.decoder.open_calls if self._blocking(n)] or [
            t for t in self.pins if self._blocking(t)
        ]
        detail = (
            f"its stream passed the {MAX_HELD_BYTES}-byte limit of events the sidecar holds "
            "while a call is checked, before the call was complete"
        )
        found = [
            Violation(p, "call", detail) for n in dict.fromkeys(names) if (p := self._blocking(n))
        ]
        for v in found:
            self.owner.count(self.exchange, v, "rejected")
        refs = ", ".join(v.pinned.ref for v in found)
        err = ToolCallViolation(
            f"the model's tool call ({refs}) streamed more than {MAX_HELD_BYTES} bytes before "
            "it was complete; the sidecar checks a call before relaying it and holds at most "
            "that much, so the stream was ended. Ask for a smaller output, or use policy "
            "report for this tool"
        )
        return self._error_event(err)

    def on_end(self, calls: Sequence[ToolCall]) -> None:
        # A stream that ended whole but without its end marker: check what is left (the agent
        # has what was relayed; nobody is left to tell). A cut stream never gets here: its
        # calls were never complete, so they are not the model's violations.
        if self.failed:
            return
        for call in calls:
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
        found: list[Violation] = []
        rewritten: list[str] = []
        for tool in exchange.request.declared_tools():
            pinned = pins.get(tool.name)
            if pinned is None or pinned.compiled is None:
                continue
            detail = declared_mismatch(pinned.compiled, tool.parameters)
            if detail is None:
                continue
            violation = Violation(pinned, "declared", detail)
            found.append(violation)
            if pinned.policy == "rewrite":
                tool.replace(copy.deepcopy(pinned.compiled.contract.args_schema))
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
