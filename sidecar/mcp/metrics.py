"""Prometheus metrics of the MCP surface (tool calls themselves count as the tool proxy's do,
in ``holdfast_tool_calls`` and the health snapshot's tool signals, per release)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge


class McpMetrics:
    def __init__(self, registry: CollectorRegistry, agent: str) -> None:
        self.agent = agent
        self.requests = Counter(
            "holdfast_mcp_requests",
            "MCP requests by tool set, protocol era, method and result (ok or the JSON-RPC "
            "error code).",
            ["agent", "toolset", "era", "method", "result"],
            registry=registry,
        )
        self.notifications = Counter(
            "holdfast_mcp_notifications",
            "Server-to-client notifications sent (tools/prompts list_changed), by method.",
            ["agent", "method"],
            registry=registry,
        )
        self.drift = Counter(
            "holdfast_mcp_backend_drift",
            "A backend's live tools/list differs from a pinned contract version (counted once "
            "per backend, tool, version and live schema).",
            ["agent", "toolset", "tool", "version"],
            registry=registry,
        )
        self.budget_refused = Counter(
            "holdfast_mcp_tool_calls_refused_budget",
            "tools/call answered isError because the session's tool-call budget was spent.",
            ["agent", "toolset"],
            registry=registry,
        )
        self.sessions = Gauge(
            "holdfast_mcp_sessions", "Open MCP sessions (handshake era).", ["agent"],
            registry=registry,
        )  # fmt: skip
        self.streams = Gauge(
            "holdfast_mcp_streams",
            "Open notification streams (GET streams and subscriptions/listen).",
            ["agent"],
            registry=registry,
        )

    def bind(self, sessions: Callable[[], int], streams: Callable[[], int]) -> None:
        self.sessions.labels(self.agent).set_function(lambda: float(sessions()))
        self.streams.labels(self.agent).set_function(lambda: float(streams()))
