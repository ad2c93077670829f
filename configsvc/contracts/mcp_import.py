"""``POST /v1/mcp/import``: register the contracts of an MCP server's ``tools/list``.

configsvc calls the server itself (through the upstream allowlist: the URL is admitted by the
handler, and every address it resolves to is checked again at connect time), then registers
each tool like ``contract register`` does -- the compatibility classifier decides each new
version (or none, when nothing changed) with its audit entry. A tool that cannot be a contract
(a name outside Holdfast's names, a schema the contract rules refuse) is reported, not
registered; the others go on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Final

from configsvc import errors
from configsvc.contracts.ops import ContractOps
from configsvc.contracts.payloads import RegisterContract
from configsvc.http import parse_object, text
from holdfast.contracts.schema import SchemaProblem, check_schema
from holdfast.keyspace import RecordError
from holdfast.keyspace.contract import DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S, POLICIES
from holdfast.keyspace.fields import MAX_TEXT
from holdfast.keyspace.keys import NAME_RE
from holdfast.keyspace.records import validate_base_url
from holdfast.mcp.client import McpClient, McpFault, McpRpcError, list_all
from holdfast.net.guard import HostPolicy

LIST_TIMEOUT_S: Final = 15.0
MAX_TOOLS: Final = 256
UNFIT_NAME: Final = (
    "the name does not fit Holdfast's names (1-63 of a-z 0-9 . _ -, starting with a letter or "
    "digit)"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportMcp:
    url: str
    tools: tuple[str, ...] = ()  # only these (empty: every tool)
    timeout_s: float = DEFAULT_TIMEOUT_S
    idempotent: bool = False
    policy: str = "enforce"
    reason: str = ""

    FIELDS = frozenset({"url", "tools", "timeout_s", "idempotent", "policy", "reason"})

    @classmethod
    def parse(cls, raw: bytes) -> ImportMcp:
        obj = parse_object(raw, cls.FIELDS)
        try:
            url = validate_base_url(text(obj, "url", required=True))
        except RecordError as exc:
            raise errors.InvalidRequest(str(exc), param="url") from exc
        tools = obj.get("tools", [])
        if not isinstance(tools, list) or not all(isinstance(t, str) for t in tools):
            raise errors.InvalidRequest("field 'tools' must be a list of names", param="tools")
        timeout = obj.get("timeout_s", DEFAULT_TIMEOUT_S)
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or not 0 < timeout <= MAX_TIMEOUT_S
        ):
            raise errors.InvalidRequest(
                f"field 'timeout_s' must be seconds in (0, {MAX_TIMEOUT_S:g}]", param="timeout_s"
            )
        idempotent = obj.get("idempotent", False)
        if not isinstance(idempotent, bool):
            raise errors.InvalidRequest("field 'idempotent' must be a boolean", param="idempotent")
        policy = text(obj, "policy") or "enforce"
        if policy not in POLICIES:
            raise errors.InvalidRequest(
                f"policy must be one of {', '.join(POLICIES)}", param="policy"
            )
        return cls(url=url, tools=tuple(tools), timeout_s=float(timeout), idempotent=idempotent,
                   policy=policy, reason=text(obj, "reason"))  # fmt: skip


async def fetch_tools(url: str, policy: HostPolicy) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The server's identity and its tools, or UpstreamUnavailable saying why not."""
    client = McpClient(policy=policy)
    try:
        conn = await client.connect(url, timeout_s=LIST_TIMEOUT_S)
        tools = await list_all(client, conn, "tools/list", "tools", timeout_s=LIST_TIMEOUT_S)
        await client.end(conn, timeout_s=2.0)
    except McpFault as exc:
        raise errors.McpImportFailed(
            f"the MCP server at {url}: {exc.message}", param="url"
        ) from exc
    except McpRpcError as exc:
        raise errors.McpImportFailed(
            f"the MCP server at {url} refused tools/list: {exc.message}", param="url"
        ) from exc
    finally:
        await client.close()
    server = {"era": conn.era, "protocol": conn.version, **conn.server_info}
    return server, tools[:MAX_TOOLS]


async def import_tools(
    ops: ContractOps, req: ImportMcp, tools: list[dict[str, Any]], actor: str
) -> list[dict[str, Any]]:
    wanted = set(req.tools)
    report: list[dict[str, Any]] = []
    for tool in tools:
        name = str(tool.get("name", ""))
        if wanted and name not in wanted:
            continue
        if not NAME_RE.fullmatch(name):
            report.append({"tool": name[:100], "skipped": UNFIT_NAME})
            continue
        try:
            args = check_schema(tool.get("inputSchema"), what="inputSchema", object_args=True)
            output = tool.get("outputSchema") or {}
            result = check_schema(output, what="outputSchema")
        except SchemaProblem as exc:
            report.append({"tool": name, "skipped": str(exc)})
            continue
        registered = await ops.register(
            name,
            RegisterContract(
                args_schema=args, result_schema=result, backend=req.url, timeout_s=req.timeout_s,
                idempotent=req.idempotent, policy=req.policy,
                description=str(tool.get("description") or "")[:MAX_TEXT],
                reason=req.reason or f"contract import-mcp {req.url}",
            ),
            actor,
        )  # fmt: skip
        report.append(
            {
                "tool": name,
                "version": registered.contract.version,
                "created": registered.created,
                **registered.diff.to_json(),
            }
        )
    return report
