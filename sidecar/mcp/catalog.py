"""What a session sees of a tool set, pure: the tools (and schemas) of its release's pinned
contract versions, the release's managed prompts as MCP prompts, and the drift of a backend's
live ``tools/list`` from those contracts.

A tool belongs to tool set T of release R when R pins a contract version for it whose backend
is one of T's backends. The list a session gets is built from those contract records, never
from the backends' live lists: a backend that changes its tools (or is down for a moment)
changes nothing a pinned session sees, and the combined list cannot flap with a flaky backend.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from holdfast.contracts.schema import canonical
from holdfast.keyspace import Release
from holdfast.keyspace.prompt import PromptVersion
from sidecar.config import ConfigSnapshot
from sidecar.contracts import Compiled, ContractBook

# What a tool definition may take from the backend's live listing: presentation only.
LIVE_EXTRAS = ("title", "annotations", "icons")


@dataclass(frozen=True, slots=True)
class Exposed:
    """The tools a release offers on one tool set; ``missing``: pinned versions whose record
    this sidecar does not hold (their backend, hence their tool set, is unknown)."""

    tools: Mapping[str, Compiled]
    missing: tuple[tuple[str, str], ...] = ()


def exposed(
    book: ContractBook, snapshot: ConfigSnapshot | None, release: Release, toolset: str
) -> Exposed:
    backends = release.mcp.get(toolset)
    if not backends:
        return Exposed({})
    tools: dict[str, Compiled] = {}
    missing: list[tuple[str, str]] = []
    for tool, version in release.contracts.items():
        compiled = book.compiled(snapshot, tool, version)
        if compiled is None:
            missing.append((tool, version))
        elif compiled.contract.backend in backends:
            tools[tool] = compiled
    return Exposed(dict(sorted(tools.items())), tuple(missing))


def tool_definition(compiled: Compiled, live: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The MCP ``Tool`` of a contract version (``live``: the backend's own entry, whose
    presentation fields are kept when present)."""
    contract = compiled.contract
    tool: dict[str, Any] = {"name": contract.tool, "inputSchema": contract.args_schema}
    if contract.description:
        tool["description"] = contract.description
    if contract.result_schema:
        tool["outputSchema"] = contract.result_schema
    for key in LIVE_EXTRAS:
        if live is not None and key in live:
            tool[key] = live[key]
    return tool


def drift(compiled: Compiled, live: Mapping[str, Any] | None) -> str | None:
    """How the backend's live tool differs from the pinned contract; None if it does not."""
    if live is None:
        return "the backend no longer lists the tool"
    found: list[str] = []
    if canonical(live.get("inputSchema")) != canonical(compiled.contract.args_schema):
        found.append("inputSchema")
    if canonical(live.get("outputSchema") or {}) != canonical(compiled.contract.result_schema):
        found.append("outputSchema")
    return " and ".join(found) + " changed" if found else None


def prompt_definition(record: PromptVersion) -> dict[str, Any]:
    """A managed prompt version as an MCP ``Prompt``: its template variables are the arguments."""
    return {
        "name": record.name,
        "description": record.description or f"managed prompt {record.name} v{record.version}",
        "arguments": [{"name": v, "required": True} for v in record.template.variables],
    }


def prompt_messages(record: PromptVersion, text: str) -> dict[str, Any]:
    return {
        "description": record.description or f"managed prompt {record.name} v{record.version}",
        "messages": [{"role": "user", "content": {"type": "text", "text": text}}],
        "_meta": {"holdfast/prompt": f"{record.name}@{record.version}"},
    }
