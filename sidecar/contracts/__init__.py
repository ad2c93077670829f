"""Versioned tool contracts: declared tools and model tool calls checked on the chat path, and
``POST /tools/{tool}`` with its backends and breakers."""

from __future__ import annotations

from sidecar.contracts.backend import ToolBackend
from sidecar.contracts.book import Compiled, ContractBook
from sidecar.contracts.breakers import Refusal, ToolBreakers
from sidecar.contracts.filter import REWRITTEN_HEADER, VIOLATION_HEADER, ContractFilter
from sidecar.contracts.stats import ContractStats
from sidecar.contracts.status import contract_status
from sidecar.contracts.tool_proxy import ToolProxy, ToolSpan, ToolTracer

__all__ = [
    "REWRITTEN_HEADER",
    "VIOLATION_HEADER",
    "Compiled",
    "ContractBook",
    "ContractFilter",
    "ContractStats",
    "Refusal",
    "ToolBackend",
    "ToolBreakers",
    "ToolProxy",
    "ToolSpan",
    "ToolTracer",
    "contract_status",
]
