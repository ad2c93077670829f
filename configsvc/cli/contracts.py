"""``holdfastctl contract register|list|show|diff``: versioned tool contracts."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any, Final

from configsvc.cli.client import Client, segment
from configsvc.cli.commands import Leaf
from configsvc.cli.render import contracts as show

Result = tuple[dict[str, Any], str]
MAX_SCHEMA_FILE_BYTES: Final = 1 << 20  # the API refuses far less; this only bounds the read
POLICIES: Final = ("enforce", "rewrite", "report")


def _schema_file(text: str) -> dict[str, Any]:
    path = Path(text)
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SCHEMA_FILE_BYTES + 1)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {exc.strerror}") from exc
    if len(raw) > MAX_SCHEMA_FILE_BYTES:
        raise argparse.ArgumentTypeError(f"{text} is larger than {MAX_SCHEMA_FILE_BYTES} bytes")
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"{text} is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text} must hold a JSON object (a JSON Schema)")
    return value


def _seconds(text: str) -> float:
    try:
        number = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return number


def contract_pin(text: str) -> tuple[str, str]:
    """``TOOL=VERSION`` of ``release create --contract`` (the API checks both names)."""
    tool, sep, version = text.partition("=")
    if not sep or not tool or not version:
        raise argparse.ArgumentTypeError(f"expected TOOL=VERSION, got {text!r}")
    return tool, version


def mcp_toolset(text: str) -> tuple[str, str]:
    """``TOOLSET=URL`` of ``release create --mcp`` (the API checks both)."""
    toolset, sep, url = text.partition("=")
    if not sep or not toolset or not url:
        raise argparse.ArgumentTypeError(f"expected TOOLSET=URL, got {text!r}")
    return toolset, url


def mcp_toolsets(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Repeated ``--mcp TOOLSET=URL`` as ``{toolset: [URL, ...]}`` (a tool set may repeat)."""
    toolsets: dict[str, list[str]] = {}
    for toolset, url in pairs:
        toolsets.setdefault(toolset, []).append(url)
    return toolsets


def release_options(sp: Any) -> None:
    """``release create``'s contract options."""
    sp.add_argument("--mcp", type=mcp_toolset, action="append", default=[],
                    metavar="TOOLSET=URL",
                    help="serve the MCP server at URL in tool set TOOLSET (/mcp/TOOLSET; "
                    "repeatable); sessions see its tools pinned by --contract")  # fmt: skip
    sp.add_argument("--contract", type=contract_pin, action="append", default=[],
                    metavar="TOOL=VERSION",
                    help="pin a tool's contract version (repeatable)")  # fmt: skip
    sp.add_argument("--contract-policy", choices=POLICIES, default="",
                    help="override every pinned contract's own policy")  # fmt: skip


def _base(tool: str) -> str:
    return f"/v1/contracts/{segment(tool)}"


def register_contract(c: Client, a: argparse.Namespace) -> Result:
    payload: dict[str, Any] = {
        "args_schema": a.args,
        "result_schema": a.result,
        "backend": a.backend,
        "idempotent": a.idempotent,
        "policy": a.policy,
        "description": a.description,
        "reason": a.reason,
    }
    if a.backend_timeout is not None:
        payload["timeout_s"] = a.backend_timeout
    body = c.call("POST", _base(a.tool), payload)
    return body, show.registered(body)


def list_(c: Client, a: argparse.Namespace) -> Result:
    if a.tool:
        body = c.call("GET", _base(a.tool))
        return body, show.versions(body)
    body = c.call("GET", "/v1/contracts")
    return body, show.tools(body)


def show_(c: Client, a: argparse.Namespace) -> Result:
    body = c.call("GET", f"{_base(a.tool)}/{segment(a.version)}")
    return body, show.contract(body)


def diff(c: Client, a: argparse.Namespace) -> Result:
    body = c.call("GET", f"{_base(a.tool)}/diff", query={"from": a.old, "to": a.new})
    return body, show.diff(body)


def import_mcp(c: Client, a: argparse.Namespace) -> Result:
    payload: dict[str, Any] = {
        "url": a.url,
        "tools": a.tool,
        "idempotent": a.idempotent,
        "policy": a.policy,
        "reason": a.reason,
    }
    if a.backend_timeout is not None:
        payload["timeout_s"] = a.backend_timeout
    body = c.call("POST", "/v1/mcp/import", payload)
    lines = [f"{body['url']} ({body['server'].get('name', '?')}, MCP {body['server']['protocol']})"]
    for tool in body["tools"]:
        if "skipped" in tool:
            lines.append(f"  {tool['tool']}: skipped: {tool['skipped']}")
        else:
            state = "registered" if tool["created"] else "unchanged"
            lines.append(f"  {tool['tool']}@{tool['version']}: {state} ({tool['compat']})")
    return body, "\n".join(lines)


def register(nouns: Any, leaf: Leaf) -> None:
    """Add this module's nouns and verbs to the parser."""
    verbs = nouns.add_parser("contract", help="versioned tool contracts").add_subparsers(
        dest="verb", required=True, metavar="VERB"
    )
    sp = leaf(verbs, "register", register_contract, "register a tool's schemas as its next version")
    sp.add_argument("tool")
    sp.add_argument("--args", required=True, type=_schema_file, metavar="FILE",
                    help="JSON Schema (2020-12) of the arguments")  # fmt: skip
    sp.add_argument("--result", required=True, type=_schema_file, metavar="FILE",
                    help="JSON Schema (2020-12) of the result")  # fmt: skip
    sp.add_argument("--backend", default="", metavar="URL",
                    help="http(s) URL the sidecar's POST /tools/TOOL calls")  # fmt: skip
    sp.add_argument("--backend-timeout", type=_seconds, default=None, metavar="S",
                    help="seconds a backend call may take (default 10)")  # fmt: skip
    sp.add_argument("--idempotent", action="store_true",
                    help="the sidecar may retry a failed call once")  # fmt: skip
    sp.add_argument("--policy", choices=POLICIES, default="enforce",
                    help="what the sidecar does on a violation (default enforce)")  # fmt: skip
    sp.add_argument("--description", default="")
    sp.add_argument("--reason", default="")
    sp = leaf(verbs, "import-mcp", import_mcp,
              "register the tools of an MCP server's tools/list as contract versions")  # fmt: skip
    sp.add_argument("url", metavar="URL", help="the MCP server's Streamable HTTP endpoint")
    sp.add_argument("--tool", action="append", default=[], metavar="NAME",
                    help="import only this tool (repeatable; default: every tool)")  # fmt: skip
    sp.add_argument("--backend-timeout", type=_seconds, default=None, metavar="S",
                    help="seconds a tools/call may take (default 10)")  # fmt: skip
    sp.add_argument("--idempotent", action="store_true",
                    help="the sidecar may retry a failed call once")  # fmt: skip
    sp.add_argument("--policy", choices=POLICIES, default="enforce")
    sp.add_argument("--reason", default="")
    sp = leaf(verbs, "list", list_, "list tools, or the versions of one tool")
    sp.add_argument("tool", nargs="?", default=None)
    sp = leaf(verbs, "show", show_, "show one contract version, schemas included")
    sp.add_argument("tool")
    sp.add_argument("version")
    sp = leaf(verbs, "diff", diff, "explain, field by field, how V2 differs from V1")
    sp.add_argument("tool")
    sp.add_argument("old", metavar="V1")
    sp.add_argument("new", metavar="V2")
