"""``holdfastctl flag apply|get|list|history|enable|kill`` and ``route flag AGENT FLAG|--clear``."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from configsvc.cli.client import Client, segment
from configsvc.cli.commands import Leaf
from configsvc.cli.render import tables as render
from holdfast.flags.limits import MAX_FILE_BYTES

Result = tuple[dict[str, Any], str]


def _read(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SystemExit(f"holdfastctl: cannot read {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise SystemExit(
            f"holdfastctl: {path} is larger than {MAX_FILE_BYTES} bytes, the limit of one flag "
            "file; split it into several files"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SystemExit(f"holdfastctl: {path} is not UTF-8 text: {exc}") from exc


def _flag_row(f: dict[str, Any]) -> list[str]:
    return [
        f["key"],
        f["type"],
        f["state"],
        render.cell(f["default_variant"]),
        ", ".join(sorted(f["variants"])),
        "yes" if f.get("targeting") else "-",
        render.cell(f.get("source") or "-"),
        str(f.get("mod_revision", "")),
    ]


def flag_apply(c: Client, a: argparse.Namespace) -> Result:
    payload = {"content": a.file_text, "source": os.path.basename(a.file), "reason": a.reason}
    body = c.call("POST", "/v1/flags/apply", payload)
    if not body["changed"]:
        return body, f"nothing changed: {len(body['unchanged'])} flag(s) already as in {a.file}"
    lines = [f"applied {len(body['changed'])} flag(s) at revision {body['revision']}:"]
    lines += [f"  {key}" for key in body["changed"]]
    if body["unchanged"]:
        lines.append(f"unchanged: {', '.join(body['unchanged'])}")
    return body, "\n".join(lines)


def flag_list(c: Client, a: argparse.Namespace) -> Result:
    body = c.call("GET", "/v1/flags")
    if not body["flags"]:
        return body, "no flags defined; add some with `holdfastctl flag apply FILE`"
    headers = ["FLAG", "TYPE", "STATE", "DEFAULT", "VARIANTS", "TARGETING", "SOURCE", "REVISION"]
    return body, render.table(headers, [_flag_row(f) for f in body["flags"]])


def _flag_detail(f: dict[str, Any]) -> str:
    targeting = json.dumps(f["targeting"], indent=2, sort_keys=True) if f["targeting"] else "-"
    variants = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(f["variants"].items()))
    return render.fields(
        [
            ("flag", f["key"]),
            ("type", f["type"]),
            ("state", f["state"]),
            ("default variant", f["default_variant"]),
            ("variants", variants),
            ("source", f"{f['source'] or '-'} {f['source_hash'][:12]}".strip()),
            ("applied", f"{render.when(f['applied_at'])} by {f['applied_by'] or '-'}"),
            ("mod revision", f["mod_revision"]),
            ("targeting", targeting),
        ]
    )


def flag_get(c: Client, a: argparse.Namespace) -> Result:
    body = c.call("GET", f"/v1/flags/{segment(a.key)}")
    return body, _flag_detail(body["flag"])


def flag_history(c: Client, a: argparse.Namespace) -> Result:
    query = {"limit": str(a.limit)} if a.limit else None
    body = c.call("GET", f"/v1/flags/{segment(a.key)}/history", query=query)
    older = (
        ""
        if body.get("complete", True)
        else "\n(older audit entries were not searched: the audit trail is very long)"
    )
    if not body["entries"]:
        return body, f"no history for flag {a.key}{older}"
    rows = [
        [
            str(e["revision"]),
            render.when(e["at"]),
            e["actor"],
            e["action"],
            render.summarize(e["before"], e["after"]),
            e["reason"] or "-",
        ]
        for e in body["entries"]
    ]
    headers = ["REVISION", "AT", "ACTOR", "ACTION", "CHANGE", "REASON"]
    return body, render.table(headers, rows) + older


def _state(c: Client, a: argparse.Namespace, verb: str) -> Result:
    body = c.call("POST", f"/v1/flags/{segment(a.key)}/{verb}", {"reason": a.reason})
    f = body["flag"]
    return body, f"flag {f['key']}: {f['state']} (mod revision {f['mod_revision']})"


def flag_enable(c: Client, a: argparse.Namespace) -> Result:
    return _state(c, a, "enable")


def flag_kill(c: Client, a: argparse.Namespace) -> Result:
    return _state(c, a, "kill")


def route_flag(c: Client, a: argparse.Namespace) -> Result:
    if a.clear == bool(a.flag):
        raise SystemExit("holdfastctl route flag: give FLAG, or --clear alone")
    path = f"/v1/agents/{segment(a.agent)}/route/flag"
    if a.clear:
        body = c.call("DELETE", path, {"reason": a.reason})
    else:
        body = c.call("PUT", path, {"flag": a.flag, "reason": a.reason})
    flag = body["route"].get("flag")
    state = f"routes new sessions by flag {flag}" if flag else "routes without a flag"
    return body, f"{a.agent}: {state}" + ("" if body["changed"] else " (unchanged)")


def _with_file(command: Any) -> Any:
    def run(c: Client, a: argparse.Namespace) -> Result:
        a.file_text = _read(a.file)
        result: Result = command(c, a)
        return result

    return run


def _subparsers_of(parser: argparse.ArgumentParser) -> Any:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise LookupError("parser has no sub-commands")


def register(nouns: Any, leaf: Leaf) -> None:
    """Add this module's nouns and verbs to the parser."""
    flag = nouns.add_parser("flag", help="feature flags (flagd format, OFREP)").add_subparsers(
        dest="verb", required=True, metavar="VERB"
    )
    sp = leaf(flag, "apply", _with_file(flag_apply), "validate a flagd file, write it atomically")
    sp.add_argument("file", help="flagd flag-definition JSON file")
    sp.add_argument("--reason", default="")
    sp = leaf(flag, "list", flag_list, "list every flag")
    sp = leaf(flag, "get", flag_get, "show one flag")
    sp.add_argument("key")
    sp = leaf(flag, "history", flag_history, "a flag's audit trail, newest first")
    sp.add_argument("key")
    sp.add_argument("--limit", type=int, default=None)
    for verb, command, text in (
        ("enable", flag_enable, "state ENABLED: targeting applies again"),
        ("kill", flag_kill, "state DISABLED: every evaluation returns the default variant"),
    ):
        sp = leaf(flag, verb, command, text)
        sp.add_argument("key")
        sp.add_argument("--reason", default="")
    route = _subparsers_of(nouns.choices["route"])
    sp = leaf(route, "flag", route_flag, "steer new sessions by a string flag naming releases")
    sp.add_argument("agent")
    sp.add_argument("flag", nargs="?", default=None)
    sp.add_argument("--clear", action="store_true", help="stop routing by flag")
    sp.add_argument("--reason", default="")
