"""``holdfastctl budget set|get|list|usage|delete``: token and cost budgets per scope and
window (and, registered from here, ``holdfastctl price``: configsvc.cli.prices)."""

from __future__ import annotations

import argparse
from typing import Any

from configsvc.cli import prices as cli_prices
from configsvc.cli.client import Client, segment
from configsvc.cli.commands import Leaf
from configsvc.cli.render.tables import fields, table, value, when

Result = tuple[dict[str, Any], str]


def _path(scope: str, tail: str = "") -> str:
    return f"/v1/budgets/{segment(scope)}{tail}"


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from exc


def _budget_lines(b: dict[str, Any]) -> str:
    return fields(
        [
            ("scope", b["scope"]),
            ("tokens", b["tokens"] or "no limit"),
            ("tool calls", b.get("tool_calls") or "no limit"),
            ("cost", f"{b['cost_usd']} USD" if b.get("cost_usd") else "no limit"),
            ("window", b["window"] + ("" if b["zone"] == "UTC" else f" ({b['zone']})")),
            ("soft", b["soft"]),
            ("on exhausted", b["on_exhausted"]),
            ("request cap", b["request_cap"] or "sidecar default"),
            (
                "queue timeout",
                f"{b['queue_timeout']:g}s" if b.get("queue_timeout") else "0 (no waiting)",
            ),
            ("fit cap", b.get("fit_cap") or "off"),
            ("fleet-wide", b["fleet"]),
            ("updated", f"{when(b['updated_at'])} by {value(b['updated_by'])}"),
            ("revision", b["mod_revision"]),
        ]
    )


def budget_set(c: Client, a: argparse.Namespace) -> Result:
    payload: dict[str, Any] = {
        "window": a.window,
        "on_exhausted": a.on_exhausted,
        "reason": a.reason,
    }
    for name in ("tokens", "cost", "zone", "soft", "request_cap", "queue_timeout", "fit_cap"):
        if getattr(a, name) is not None:
            payload[name] = getattr(a, name)
    if a.tool_calls is not None:
        payload["tool_calls"] = a.tool_calls
    body = c.call("PUT", _path(a.scope), payload)
    verb = "created" if body.get("created") else "updated"
    return body, f"budget {verb}\n" + _budget_lines(body["budget"])


def budget_get(c: Client, a: argparse.Namespace) -> Result:
    body = c.call("GET", _path(a.scope))
    return body, _budget_lines(body["budget"])


def budget_list(c: Client, a: argparse.Namespace) -> Result:
    body = c.call("GET", "/v1/budgets")
    rows = [
        [
            b["scope"],
            str(b["tokens"] or "-"),
            value(b.get("cost_usd")) if b.get("cost_usd") else "-",
            str(b.get("tool_calls") or "-"),
            b["window"],
            str(b["soft"]),
            b["on_exhausted"],
        ]
        for b in body["budgets"]
    ]
    if not rows:
        return body, "no budgets"
    head = ["SCOPE", "TOKENS", "COST USD", "TOOL CALLS", "WINDOW", "SOFT", "ON EXHAUSTED"]
    return body, table(head, rows)


def _usage_lines(u: dict[str, Any], unit: str) -> list[tuple[str, Any]]:
    suffix = " USD" if unit == "usd" else ""
    return [
        (
            "used" if unit == "tokens" else "cost used",
            f"{u['used']}{suffix} of {u['limit']}{suffix} "
            f"({u['reserved']}{suffix} reserved in flight)",
        ),
        ("remaining" if unit == "tokens" else "cost remaining", f"{u['remaining']}{suffix}"),
        ("estimated" if unit == "tokens" else "cost estimated", f"{u['estimated']}{suffix}"),
    ]


def _queue_lines(u: dict[str, Any]) -> list[tuple[str, Any]]:
    if "waiting" not in u:
        return []  # a configsvc from before queueing
    return [
        ("waiting now", f"{u['waiting']} requests (needing {u['queued']})"),
        (
            "waited",
            f"{u['waits']} requests, mean {u['wait_mean_ms']} ms, longest {u['wait_max_ms']} ms",
        ),
        (
            "refused",
            f"{u['refused_spent']} budget spent, {u['refused_could_not_wait']} could not wait",
        ),
    ]


def budget_usage(c: Client, a: argparse.Namespace) -> Result:
    body = c.call("GET", _path(a.scope, "/usage"))
    u = body["usage"]
    calls = u.get("tool_calls")
    counted = (
        [("tool calls", f"limit {calls['limit']} per {calls['window']}, counted by the sidecar "
                        "serving the session (its /status: contracts.mcp.tool_call_budgets)")]
        if calls
        else []
    )  # fmt: skip
    if u.get("unit") == "tool_calls":
        return body, fields([("scope", u["scope"]), *counted])
    head = fields(
        [
            ("scope", u["scope"]),
            (
                "window",
                u["window"]
                if u.get("window_ends_at") is None
                else f"{u['window']} (ends {when(u['window_ends_at'])})",
            ),
            *(_usage_lines(u, "tokens") if u.get("unit", "tokens") == "tokens" else []),
            *(_usage_lines(u["cost"], "usd") if u.get("cost") else []),
            *counted,
            *_queue_lines(u),
        ]
    )
    parts = [(u, "")] if u.get("unit", "tokens") == "tokens" else []
    if u.get("cost"):
        parts.append((u["cost"], " (USD)"))
    for part, label in parts:
        rows = [
            [
                h["holder"],
                str(h["grant"]),
                str(h["used"]),
                str(h["returned"]),
                str(h.get("queued", 0)),
                value(h["live"]),
            ]
            for h in part["holders"]
        ]
        if rows:
            head += "\n\n" + table(
                ["SIDECAR", f"SLICE{label}", "USED", "RETURNED", "QUEUED", "LIVE"], rows
            )
    return body, head


def budget_delete(c: Client, a: argparse.Namespace) -> Result:
    body = c.call("DELETE", _path(a.scope), {"reason": a.reason})
    return body, f"budget {body['scope']} deleted (revision {body['revision']})"


def register(nouns: Any, leaf: Leaf) -> None:
    """Add ``budget`` and its verbs to the parser."""
    verbs = nouns.add_parser("budget", help="token and cost budgets per window").add_subparsers(
        dest="verb", required=True, metavar="VERB"
    )
    sp = leaf(verbs, "set", budget_set, "create or replace the budget of SCOPE")
    sp.add_argument("scope", help="session:ID, agent:NAME, tenant:ID or global")
    sp.add_argument("--tokens", type=_whole, default=None, help="token limit per window")
    sp.add_argument(
        "--cost",
        default=None,
        metavar="USD",
        help="cost limit per window in US dollars (priced by `holdfastctl price`)",
    )
    sp.add_argument("--window", required=True, help="1m, 1h, 1d (any N s/m/h/d), day, month")
    sp.add_argument("--zone", default=None, help="time zone of day/month windows (UTC)")
    sp.add_argument("--soft", type=_fraction, default=None, help="warn fraction (0.8)")
    sp.add_argument(
        "--on-exhausted", default="reject", metavar="reject|degrade:RELEASE", help="(reject)"
    )
    sp.add_argument("--request-cap", type=_whole, default=None, help="max_tokens when absent")
    sp.add_argument(
        "--tool-calls",
        type=_whole,
        default=None,
        metavar="N",
        help="session scopes: MCP tool calls per window (tools/call through the sidecar)",
    )
    sp.add_argument(
        "--queue-timeout",
        type=_fraction,
        default=None,
        metavar="S",
        help="seconds a request that does not fit yet may wait for requests in flight to "
        "settle or for a bigger slice (10; 0: refuse at once)",
    )
    sp.add_argument(
        "--fit-cap",
        type=_whole,
        default=None,
        metavar="N",
        help="admit a request whose cap no longer fits with its cap lowered to what is left, "
        "if that is at least N tokens per choice (0: never, the default)",
    )
    sp.add_argument("--reason", default="")
    sp = leaf(verbs, "get", budget_get, "show the budget of SCOPE")
    sp.add_argument("scope")
    leaf(verbs, "list", budget_list, "every budget")
    sp = leaf(verbs, "usage", budget_usage, "the window's use of SCOPE, fleet-wide, per sidecar")
    sp.add_argument("scope")
    sp = leaf(verbs, "delete", budget_delete, "remove the budget of SCOPE")
    sp.add_argument("scope")
    sp.add_argument("--reason", default="")
    cli_prices.register(nouns, leaf)
