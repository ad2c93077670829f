"""The MCP methods the sidecar answers, the same in both eras: tools, prompts, resources.

``tools/list`` and ``tools/call`` are the session's pinned contract versions (``catalog``,
``calls``); the release's managed prompts are offered beside the backends' own prompts; the
backends' resources are aggregated (a backend that fails is left out of a list, never the list
out of the answer). Protocol errors are ``RpcProblem``; everything that goes wrong in a tool
call is a tool result with ``isError``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from holdfast.keyspace import Release
from holdfast.logs import get_logger
from holdfast.mcp import wire
from holdfast.mcp.client import McpFault, McpRpcError, list_all
from holdfast.prompts.template import TemplateError, values_from
from sidecar.budgets import ToolCallBudget, ToolCallRefused
from sidecar.config import ConfigState
from sidecar.contracts import Compiled, ContractBook, ContractStats
from sidecar.errors import SidecarError
from sidecar.mcp import catalog
from sidecar.mcp.backends import Backends
from sidecar.mcp.calls import ToolCalls, is_error
from sidecar.mcp.drift import DriftLog
from sidecar.mcp.metrics import McpMetrics
from sidecar.pins import Pinning
from sidecar.routing import Resolved, index_of, session_prompt

log = get_logger(__name__)

LIVE_LIST_TIMEOUT_S: Final = 2.0
DRIFT_CONFIRM_AGE_S: Final = 1.0
LIST_TIMEOUT_S: Final = 10.0
# Outcomes of a tool call whose backend was never asked: no tool call is charged for them.
NOT_CALLED: Final = frozenset({"invalid_args", "circuit_open"})


class RpcProblem(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@dataclass(frozen=True, slots=True)
class Context:
    """Who asks: the tool set, the pin key (None: unpinned), the backend-session key."""

    toolset: str
    pin_key: str | None
    conn_key: str
    era: str
    request_id: str = ""
    extra_headers: dict[str, str] = field(default_factory=dict)


Method = Callable[[Context, dict[str, Any]], Awaitable[dict[str, Any]]]


class Methods:
    def __init__(
        self,
        agent: str,
        config: ConfigState,
        pinning: Pinning,
        book: ContractBook,
        stats: ContractStats,
        metrics: McpMetrics,
        backends: Backends,
        calls: ToolCalls,
        drift: DriftLog | None = None,
        budget: ToolCallBudget | None = None,
    ) -> None:
        self.agent = agent
        self.config = config
        self.pinning = pinning
        self.book = book
        self.stats = stats
        self.metrics = metrics
        self.backends = backends
        self.calls = calls
        self.drift = drift if drift is not None else DriftLog()
        self.budget = budget
        self.table: dict[str, Method] = {
            "tools/list": self.tools_list,
            "tools/call": self.tools_call,
            "prompts/list": self.prompts_list,
            "prompts/get": self.prompts_get,
            "resources/list": self._aggregate("resources/list", "resources"),
            "resources/templates/list": self._aggregate(
                "resources/templates/list", "resourceTemplates"
            ),
            "resources/read": self.resources_read,
        }

    async def resolve(self, pin_key: str | None) -> Resolved:
        """The release that serves this session: its pin, or (first request) the route."""
        snapshot = self.config.current
        try:
            resolved = self.pinning.lookup(snapshot, self.agent, pin_key)
            if resolved is None:
                resolved = await self.pinning.first_turn(snapshot, self.agent, pin_key)
        except SidecarError as exc:
            raise RpcProblem(wire.CONFIG_UNAVAILABLE, exc.message) from exc
        return resolved

    def _backends(self, release: Release, toolset: str) -> tuple[str, ...]:
        return release.mcp.get(toolset, ())

    # -- tools ----------------------------------------------------------------------------

    async def tools_list(self, ctx: Context, _params: dict[str, Any]) -> dict[str, Any]:
        resolved = await self.resolve(ctx.pin_key)
        release = resolved.release
        found = catalog.exposed(self.book, self.config.current, release, ctx.toolset)
        for tool, version in found.missing:
            self.stats.missing(release.name, tool, version)
        live: dict[str, dict[str, dict[str, Any]] | None] = {}
        for url in self._backends(release, ctx.toolset):
            live[url] = await self.backends.live_tools(url, timeout_s=LIVE_LIST_TIMEOUT_S)
        tools = []
        confirmed: set[str] = set()
        for name, compiled in found.tools.items():
            url = compiled.contract.backend
            listing = live.get(url)
            entry = listing.get(name) if listing is not None else None
            if listing is not None and url not in confirmed and self._unconfirmed(compiled, entry):
                # A listing cached before the session's contract changed (a migration, a
                # rollout) is no evidence of drift: list the backend afresh before saying so.
                confirmed.add(url)
                listing = live[url] = await self.backends.live_tools(
                    url, timeout_s=LIVE_LIST_TIMEOUT_S, max_age_s=DRIFT_CONFIRM_AGE_S
                )
                entry = listing.get(name) if listing is not None else None
            if listing is not None:
                self._check_drift(ctx.toolset, release, compiled, entry)
            tools.append(catalog.tool_definition(compiled, entry))
        return {"tools": tools}

    def _unconfirmed(self, compiled: Compiled, live: dict[str, Any] | None) -> bool:
        """A drift seen in a listing older than DRIFT_CONFIRM_AGE_S and not noted before."""
        contract = compiled.contract
        return (
            catalog.drift(compiled, live) is not None
            and self.backends.listing_age(contract.backend) >= DRIFT_CONFIRM_AGE_S
            and not self.drift.known(
                backend=contract.backend, tool=contract.tool, version=contract.version, live=live
            )
        )

    def _check_drift(
        self,
        toolset: str,
        release: Release,
        compiled: Compiled,
        live: dict[str, Any] | None,
    ) -> None:
        detail = catalog.drift(compiled, live)
        if detail is None:
            return
        contract = compiled.contract
        noted = self.drift.note(
            toolset=toolset, backend=contract.backend, tool=contract.tool,
            version=contract.version, release=release.name, live=live, detail=detail,
            now=time.time(),
        )  # fmt: skip
        if noted is None:
            return
        self.stats.violation(release.name, contract.tool, contract.version, "drift", "reported")
        self.metrics.drift.labels(self.agent, toolset, contract.tool, contract.version).inc()
        log.warning(
            "mcp_backend_drift", toolset=toolset, backend=contract.backend,
            contract=contract.ref, release=release.name, detail=detail, id=noted.ident,
        )  # fmt: skip

    async def tools_call(self, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str) or not name:
            raise RpcProblem(wire.INVALID_PARAMS, "tools/call needs the tool's name")
        arguments = params.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise RpcProblem(wire.INVALID_PARAMS, "tools/call arguments must be an object")
        resolved = await self.resolve(ctx.pin_key)
        release = resolved.release
        found = catalog.exposed(self.book, self.config.current, release, ctx.toolset)
        compiled = found.tools.get(name)
        if compiled is None:
            version = release.contracts.get(name)
            if version is not None and (name, version) in found.missing:
                self.stats.missing(release.name, name, version)
                ref = f"{name}@{version}"
                text = (
                    f"the {ref} contract has not reached this sidecar yet (or was refused), so "
                    "the tool cannot be checked or called now; try again shortly"
                )
                return is_error(text, outcome="unavailable", ref=ref)
            offered = ", ".join(found.tools) or "none"
            raise RpcProblem(
                wire.INVALID_PARAMS,
                f"Unknown tool: {name:.100} (release {release.name} offers on this tool set: "
                f"{offered})",
            )
        contract = compiled.contract
        budget = self.budget
        admitted = budget.admit(ctx.pin_key) if budget is not None else None
        if isinstance(admitted, ToolCallRefused):
            self.metrics.budget_refused.labels(self.agent, ctx.toolset).inc()
            log.info("mcp_tool_call_budget_exhausted", scope=admitted.scope, tool=name)
            return is_error(admitted.message, outcome="budget_exhausted", ref=contract.ref)
        started = time.perf_counter()
        try:
            outcome = await self.calls.call(
                compiled,
                arguments,
                key=ctx.conn_key,
                extra_headers=ctx.extra_headers,
                request_id=ctx.request_id,
            )
        except BaseException:
            if budget is not None and admitted is not None:
                budget.settle(admitted, called=True)  # cut off mid-call: it may have gone out
            raise
        if budget is not None and admitted is not None:
            budget.settle(admitted, called=outcome.outcome not in NOT_CALLED)
        elapsed = time.perf_counter() - started
        if outcome.outcome in ("invalid_args", "invalid_result"):
            kind = outcome.outcome.removeprefix("invalid_")
            self.stats.violation(release.name, contract.tool, contract.version, kind, "degraded")
        self.stats.tool_call(
            release.name, contract.tool, contract.version, outcome.outcome, elapsed
        )
        if outcome.outcome not in ("ok", "tool_error"):
            log.warning(
                "mcp_tool_call_degraded",
                tool=contract.tool,
                version=contract.version,
                release=release.name,
                outcome=outcome.outcome,
            )
        return outcome.result

    # -- prompts --------------------------------------------------------------------------

    def _managed(self, resolved: Resolved, pin_key: str | None) -> dict[str, Any]:
        """The release's managed prompts at the session's versions, by name."""
        release = resolved.release
        index = index_of(self.config.current)
        entry = self.pinning.table.get(pin_key) if pin_key is not None else None
        pinned = entry.pin.prompts if entry is not None else None
        found = {}
        for name in release.prompts:
            try:
                found[name] = session_prompt(index, release, name, pinned)
            except SidecarError:
                continue  # not held here: left out of the list, as a failing backend is
        return found

    async def prompts_list(self, ctx: Context, _params: dict[str, Any]) -> dict[str, Any]:
        resolved = await self.resolve(ctx.pin_key)
        managed = self._managed(resolved, ctx.pin_key)
        prompts = [catalog.prompt_definition(r) for r in managed.values()]
        for item in await self._from_backends(ctx, resolved, "prompts/list", "prompts"):
            if item.get("name") not in managed:
                prompts.append(item)
        return {"prompts": prompts}

    async def prompts_get(self, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        name = params.get("name")
        if not isinstance(name, str) or not name:
            raise RpcProblem(wire.INVALID_PARAMS, "prompts/get needs the prompt's name")
        resolved = await self.resolve(ctx.pin_key)
        record = self._managed(resolved, ctx.pin_key).get(name)
        if record is None:
            return await self._first_answer(ctx, resolved, "prompts/get", params, "prompts")
        try:
            values = values_from(params.get("arguments") or {}, what="prompt arguments")
            text = record.template.render(values)
        except TemplateError as exc:
            raise RpcProblem(wire.INVALID_PARAMS, f"prompt {name}: {exc}") from exc
        return catalog.prompt_messages(record, text)

    # -- resources and what backends answer -----------------------------------------------

    def _aggregate(self, method: str, key: str) -> Method:
        async def aggregate(ctx: Context, _params: dict[str, Any]) -> dict[str, Any]:
            resolved = await self.resolve(ctx.pin_key)
            return {key: await self._from_backends(ctx, resolved, method, key)}

        return aggregate

    async def resources_read(self, ctx: Context, params: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(params.get("uri"), str):
            raise RpcProblem(wire.INVALID_PARAMS, "resources/read needs a uri")
        resolved = await self.resolve(ctx.pin_key)
        return await self._first_answer(ctx, resolved, "resources/read", params, "resources")

    async def _from_backends(
        self, ctx: Context, resolved: Resolved, method: str, key: str
    ) -> list[dict[str, Any]]:
        capability = method.split("/")[0]
        items: list[dict[str, Any]] = []
        for url in self._backends(resolved.release, ctx.toolset):
            try:
                conn = await self.backends.connection(ctx.conn_key, url)
                if not conn.has(capability):
                    continue
                items.extend(
                    await list_all(
                        self.backends.client, conn, method, key, timeout_s=LIST_TIMEOUT_S
                    )
                )
            except (McpFault, McpRpcError) as exc:
                log.info("mcp_backend_list_skipped", backend=url, method=method, error=str(exc))
        return items

    async def _first_answer(
        self,
        ctx: Context,
        resolved: Resolved,
        method: str,
        params: dict[str, Any],
        capability: str,
    ) -> dict[str, Any]:
        """The first backend of the tool set that answers ``method`` without an error."""
        problem = RpcProblem(wire.INVALID_PARAMS, f"no backend of this tool set answers {method}")
        forwarded = {k: v for k, v in params.items() if k != "_meta"}
        for url in self._backends(resolved.release, ctx.toolset):
            try:
                conn = await self.backends.connection(ctx.conn_key, url)
                if not conn.has(capability):
                    continue
                answer = await self.backends.request(
                    ctx.conn_key, url, method, forwarded, timeout_s=LIST_TIMEOUT_S,
                    request_id=ctx.request_id,
                )  # fmt: skip
            except McpRpcError as exc:
                problem = RpcProblem(exc.code, exc.message, exc.data)
                continue
            except McpFault as exc:
                problem = RpcProblem(wire.INTERNAL_ERROR, f"a backend failed: {exc.message}")
                continue
            return {k: v for k, v in answer.items() if k != "resultType"}
        raise problem
