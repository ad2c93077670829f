"""``holdfastctl route categories AGENT --file rules.json | --clear``, and the rules in
``route show``.

The file holds a JSON list of rules (or ``{"rules": [...]}``), e.g.
``[{"category": "billing", "keywords": ["refund", "invoice"]},
{"category": "legal", "pattern": "(?i)\\bgdpr\\b", "tenants": ["acme"]}]``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

from configsvc.cli.client import Client, segment
from configsvc.cli.commands import Leaf
from configsvc.cli.flags import _read, _subparsers_of
from configsvc.cli.render.tables import table

Result = tuple[dict[str, Any], str]


def rules_from(path: str) -> list[Any]:
    try:
        loaded = json.loads(_read(path))
    except json.JSONDecodeError as exc:
        raise SystemExit(f"holdfastctl: {path} is not valid JSON: {exc}") from exc
    rules = loaded.get("rules") if isinstance(loaded, dict) else loaded
    if not isinstance(rules, list):
        raise SystemExit(f'holdfastctl: {path}: give a JSON list of rules or {{"rules": [...]}}')
    return rules


def rules_text(route: Mapping[str, Any]) -> str:
    """The route's category rules as a table, first match first ("" when there are none)."""
    rules = route.get("categories") or []
    if not rules:
        return ""
    rows = [
        [
            str(i + 1),
            r["category"],
            ", ".join(r.get("keywords") or []) or "-",
            r.get("pattern") or "-",
            ", ".join(r.get("tenants") or []) or "any",
        ]
        for i, r in enumerate(rules)
    ]
    head = "category rules (X-Holdfast-Category wins; else the first match; else default):"
    return head + "\n" + table(("#", "CATEGORY", "KEYWORDS", "PATTERN", "TENANTS"), rows)


def route_categories(c: Client, a: argparse.Namespace) -> Result:
    if bool(a.file) == a.clear:
        raise SystemExit("holdfastctl route categories: give --file FILE, or --clear alone")
    path = f"/v1/agents/{segment(a.agent)}/route/categories"
    if a.clear:
        body = c.call("DELETE", path, {"reason": a.reason})
    else:
        body = c.call("PUT", path, {"rules": rules_from(a.file), "reason": a.reason})
    route = body["route"]
    n = len(route.get("categories") or [])
    head = f"route {a.agent}: {n} category rule(s)" + ("" if body["changed"] else " (unchanged)")
    return body, "\n".join(line for line in (head, rules_text(route)) if line)


def register(nouns: Any, leaf: Leaf) -> None:
    """Add ``route categories`` to the ``route`` noun."""
    route = _subparsers_of(nouns.choices["route"])
    sp = leaf(route, "categories", route_categories, "set how requests are put in categories")
    sp.add_argument("agent")
    sp.add_argument("--file", default=None, help="JSON list of rules, first match wins")
    sp.add_argument("--clear", action="store_true", help="remove every category rule")
    sp.add_argument("--reason", default="")
