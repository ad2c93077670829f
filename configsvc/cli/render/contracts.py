"""Human output of ``holdfastctl contract ...``: pure functions of the API's JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from configsvc.cli.render.tables import cell, fields, table, when


def _changes(changes: Sequence[Mapping[str, Any]]) -> str:
    if not changes:
        return "no changes"
    rows = [[c["severity"], cell(c["path"]), c["what"], c["detail"]] for c in changes]
    return table(["SEVERITY", "FIELD", "WHAT", "DETAIL"], rows)


def registered(body: Mapping[str, Any]) -> str:
    c = body["contract"]
    if not body.get("created"):
        return f"{c['tool']}: unchanged, content identical to {c['version']} (nothing written)"
    head = f"registered {c['tool']} {c['version']} ({body['compat']}"
    head += f" vs {c['previous']})" if c.get("previous") else ")"
    return head if not body.get("changes") else head + "\n" + _changes(body["changes"])


def tools(body: Mapping[str, Any]) -> str:
    rows = [
        [t["tool"], t["latest"], str(t["versions"]), t["compat"], cell(t["backend"]), t["policy"]]
        for t in body.get("tools", [])
    ]
    if not rows:
        return "no tool contracts registered"
    return table(["TOOL", "LATEST", "VERSIONS", "COMPAT", "BACKEND", "POLICY"], rows)


def versions(body: Mapping[str, Any]) -> str:
    rows = [
        [v["version"], v["compat"], cell(v["previous"]), cell(v["backend"]), v["policy"],
         when(v["created_at"]), cell(v["created_by"])]
        for v in body.get("versions", [])
    ]  # fmt: skip
    headers = ["VERSION", "COMPAT", "PREVIOUS", "BACKEND", "POLICY", "CREATED", "BY"]
    return f"tool {body['tool']}\n" + table(headers, rows)


def contract(body: Mapping[str, Any]) -> str:
    c = body["contract"]
    pairs = [
        ("tool", c["tool"]),
        ("version", c["version"]),
        ("compat", f"{c['compat']} vs {c['previous']}" if c.get("previous") else c["compat"]),
        ("backend", c["backend"]),
        ("timeout", f"{c['timeout_s']:g}s"),
        ("idempotent", "yes" if c["idempotent"] else "no"),
        ("policy", c["policy"]),
        ("content hash", c["content_hash"]),
        ("created", f"{when(c['created_at'])} by {c['created_by'] or '-'}"),
        ("description", c["description"]),
    ]
    schemas = [
        f"{name}:\n{json.dumps(c[name], indent=2, sort_keys=True)}"
        for name in ("args_schema", "result_schema")
    ]
    return "\n".join([fields(pairs), *schemas])


def diff(body: Mapping[str, Any]) -> str:
    head = f"{body['tool']} {body['from']} -> {body['to']}: {body['compat']}"
    return head + "\n" + _changes(body.get("changes", []))
