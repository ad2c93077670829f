"""``holdfastctl prompt create|list|show|diff|eval|activate|rollback`` and ``release create
--prompt``: prompt versions with an evaluation gate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Final

from configsvc.cli.client import Client, Refused, segment
from configsvc.cli.commands import Leaf
from configsvc.cli.render import tables as render
from configsvc.prompts.settings import client_wait

Result = tuple[dict[str, Any], str]
MAX_FILE_BYTES: Final = 1 << 20


def _read(text: str) -> bytes:
    try:
        with Path(text).open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text}: {exc.strerror}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise argparse.ArgumentTypeError(f"{text} is larger than {MAX_FILE_BYTES} bytes")
    return raw


def _text_file(text: str) -> str:
    try:
        return _read(text).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise argparse.ArgumentTypeError(f"{text} is not UTF-8 text: {exc}") from exc


def _cases_file(text: str) -> Any:
    try:
        return json.loads(_read(text))
    except (ValueError, UnicodeDecodeError) as exc:
        raise argparse.ArgumentTypeError(f"case file {text} is not JSON: {exc}") from exc


def _ref(text: str) -> tuple[str, str]:
    """``NAME@VERSION``."""
    name, sep, version = text.partition("@")
    if not sep or not name or not version:
        raise argparse.ArgumentTypeError(f"expected NAME@VERSION, got {text!r}")
    return name, version


def prompt_pin(text: str) -> tuple[str, str]:
    """``release create --prompt``: NAME (its active version now), NAME=N, or NAME=active."""
    name, sep, version = text.partition("=")
    if not name or (sep and not version):
        raise argparse.ArgumentTypeError(f"expected NAME, NAME=VERSION or NAME=active: {text!r}")
    return name, version if sep else "current"


def release_options(sp: Any) -> None:
    sp.add_argument("--prompt", type=prompt_pin, action="append", default=[],
                    metavar="NAME[=VERSION|=active]",
                    help="a prompt of the bundle: NAME takes its active version now, NAME=N a "
                         "version, NAME=active follows activations (repeatable)")  # fmt: skip


def _base(name: str) -> str:
    return f"/v1/prompts/{segment(name)}"


def _version_rows(versions: list[dict[str, Any]]) -> str:
    rows = [
        [
            str(v["version"]),
            v["status"],
            "-" if v.get("pass_rate") is None else f"{v['pass_rate']:.0%}",
            render.cell(v.get("evaluated_release")),
            render.cell(v.get("author")),
            render.when(v.get("created_at")),
            render.cell(v.get("description")),
        ]
        for v in versions
    ]
    headers = ("VERSION", "STATUS", "PASS", "EVAL RELEASE", "AUTHOR", "CREATED", "DESCRIPTION")
    return render.table(headers, rows)


def create(c: Client, a: argparse.Namespace) -> Result:
    body = c.call(
        "POST", _base(a.name), {"text": a.file, "description": a.description, "reason": a.reason}
    )
    p = body["prompt"]
    variables = ", ".join(p["variables"]) or "none"
    return body, f"created {p['name']}@{p['version']} (draft; variables: {variables})"


def list_(c: Client, a: argparse.Namespace) -> Result:
    if a.name:
        body = c.call("GET", _base(a.name))
        return body, _version_rows(body["versions"]) + f"\ngate: {body['gate']:.0%}"
    body = c.call("GET", "/v1/prompts")
    rows = [
        [p["name"], render.cell(p["active"]), str(p["latest"]), str(p["versions"])]
        for p in body["prompts"]
    ]
    return body, render.table(("PROMPT", "ACTIVE", "LATEST", "VERSIONS"), rows)


def show(c: Client, a: argparse.Namespace) -> Result:
    name, version = a.ref
    body = c.call("GET", f"{_base(name)}/{segment(version)}")
    p = body["prompt"]
    head = render.fields(
        [
            ("prompt", f"{p['name']}@{p['version']}"),
            ("status", p["status"]),
            ("author", p["author"]),
            ("created", render.when(p["created_at"])),
            ("variables", ", ".join(p["variables"]) or "none"),
            ("previous", p["previous"]),
            ("pass rate", p["pass_rate"]),
            ("evaluated on", p["evaluated_release"]),
        ]
    )
    return body, f"{head}\n\n{p['text']}"


def diff(c: Client, a: argparse.Namespace) -> Result:
    body = c.call("GET", f"{_base(a.name)}/diff", query={"from": a.old, "to": a.new})
    if body["identical"]:
        return body, f"{a.name}@{a.old} and {a.name}@{a.new} have the same text"
    notes = []
    if body["variables_added"]:
        notes.append("variables added: " + ", ".join(body["variables_added"]))
    if body["variables_removed"]:
        notes.append("variables removed: " + ", ".join(body["variables_removed"]))
    return body, body["diff"].rstrip("\n") + ("\n" + "\n".join(notes) if notes else "")


def evaluate(c: Client, a: argparse.Namespace) -> Result:
    name, version = a.ref
    agent, sep, release = a.release.partition("/")
    if not sep:
        agent, release = a.agent or "", a.release
    if not agent:
        raise SystemExit("holdfastctl prompt eval: give --release AGENT/RELEASE or --agent")
    payload = {"agent": agent, "release": release, "cases": a.cases}
    path = f"{_base(name)}/{segment(version)}/eval"
    body = c.call("POST", path, payload, timeout=_eval_wait(c, path, a.cases))
    ev = body["evaluation"]
    rows = [
        [
            r["case"],
            "pass" if r["passed"] else "FAIL",
            r["error"]
            or "; ".join(k["kind"] + ": " + k["detail"] for k in r["checks"] if not k["passed"]),
        ]
        for r in ev["cases"]
    ]
    verdict = "passes" if body["passes_gate"] else "does NOT pass"
    minimum = body.get("min_cases")
    summary = (
        f"{name}@{version} on {agent}/{ev['release']} ({ev['model']}): {ev['passed']}/"
        f"{ev['total']} passed ({ev['pass_rate']:.0%}); {verdict} the gate of {body['gate']:.0%}"
        + (f" with at least {minimum} cases" if minimum else "")
    )
    return body, render.table(("CASE", "RESULT", "WHY"), rows) + "\n" + summary


def _eval_wait(c: Client, path: str, cases: Any) -> float:
    """An evaluation answers when every case ran: wait as long as the server may take for this
    many cases (it advertises its bounds), not just --timeout."""
    count = len(cases.get("cases") or []) if isinstance(cases, dict) else len(cases or [])
    try:
        limits = c.call("GET", path).get("limits")
    except Refused as exc:
        error = exc.body.get("error")
        if not isinstance(error, dict) or error.get("code") != "unknown_url":
            raise  # e.g. no such prompt version: said now, before the cases are sent
        limits = None  # a configsvc older than the endpoint: its defaults
    return client_wait(limits if isinstance(limits, dict) else None, count, c.settings.timeout)


def activate(c: Client, a: argparse.Namespace) -> Result:
    name, version = a.ref
    payload = {"force": a.force, "reason": a.reason}
    body = c.call("POST", f"{_base(name)}/{segment(version)}/activate", payload)
    return body, _activation("activated", body)


def rollback(c: Client, a: argparse.Namespace) -> Result:
    body = c.call("POST", f"{_base(a.name)}/rollback", {"reason": a.reason})
    return body, _activation("rolled back to", body)


def _activation(verb: str, body: dict[str, Any]) -> str:
    was = body["deactivated"]
    tail = f" (was {was}, now deprecated)" if was else ""
    forced = f" -- FORCED past the gate: {body.get('gate_note')}" if body["forced"] else ""
    ev = body.get("evaluation")
    line = f"{verb} {body['name']}@{body['active']}{tail}{forced}"
    if ev:
        line += (
            f"\nevaluation: {ev['passed']}/{ev['total']} passed ({ev['pass_rate']:.0%}) on "
            f"release {ev['agent']}/{ev['release']} ({ev['model']})"
        )
    return line


def register(nouns: Any, leaf: Leaf) -> None:
    verbs = nouns.add_parser("prompt", help="prompt versions and their gate").add_subparsers(
        dest="verb", required=True, metavar="VERB"
    )
    sp = leaf(verbs, "create", create, "create the next version of a prompt (a draft)")
    sp.add_argument("name")
    sp.add_argument("--file", required=True, type=_text_file, metavar="FILE",
                    help="prompt text; {{var}} is a variable, \\{{ a literal {{")  # fmt: skip
    sp.add_argument("--description", default="")
    sp.add_argument("--reason", default="")
    sp = leaf(verbs, "list", list_, "list prompts, or the versions of one")
    sp.add_argument("name", nargs="?", default=None)
    sp = leaf(verbs, "show", show, "show one version, text included")
    sp.add_argument("ref", type=_ref, metavar="NAME@VERSION")
    sp = leaf(verbs, "diff", diff, "unified diff of two versions' text")
    sp.add_argument("name")
    sp.add_argument("old", metavar="V1")
    sp.add_argument("new", metavar="V2")
    sp = leaf(verbs, "eval", evaluate, "run evaluation cases against a release's model")
    sp.add_argument("ref", type=_ref, metavar="NAME@VERSION")
    sp.add_argument("--cases", required=True, type=_cases_file, metavar="FILE")
    sp.add_argument("--release", required=True, metavar="[AGENT/]RELEASE")
    sp.add_argument("--agent", default=None, help="the release's agent (or AGENT/RELEASE)")
    sp = leaf(verbs, "activate", activate, "make a version active (gated by its evaluation)")
    sp.add_argument("ref", type=_ref, metavar="NAME@VERSION")
    sp.add_argument("--force", action="store_true", help="activate below the gate (audited)")
    sp.add_argument("--reason", default="")
    sp = leaf(verbs, "rollback", rollback, "re-activate the previously active version")
    sp.add_argument("name")
    sp.add_argument("--reason", default="")
