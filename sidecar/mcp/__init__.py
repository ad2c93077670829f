"""The sidecar as an MCP server: ``/mcp/{toolset}`` over Streamable HTTP (2026-07-28 and the
handshake revisions), in front of the tool set's MCP backends, every session pinned to a
release and shown exactly its release's contract versions."""

from __future__ import annotations

from sidecar.mcp.backends import Backends
from sidecar.mcp.calls import ToolCalls
from sidecar.mcp.drift import DriftLog
from sidecar.mcp.methods import Methods
from sidecar.mcp.metrics import McpMetrics
from sidecar.mcp.server import McpServer
from sidecar.mcp.sessions import SessionBook

__all__ = ["Backends", "DriftLog", "McpMetrics", "McpServer", "Methods", "SessionBook", "ToolCalls"]
