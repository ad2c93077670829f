"""``holdfastctl price set|list|delete``: the fleet's price table (USD per 1M tokens).

One entry per release or model name; a release's own entry wins over its model's. Sidecars
use it for cost limits of budgets and for cost signals (their ``--prices`` file only fills
in names the table lacks).
"""

from __future__ import annotations

import argparse
from typing import Any

from configsvc.cli.client import Client, segment
from configsvc.cli.commands import Leaf
from configsvc.cli.render.tables import table, value, when

Result = tuple[dict[str, Any], str]


def _path(name: str) -> str:
    return f"/v1/prices/{segment(name)}"


def price_set(c: Client, a: argparse.Namespace) -> Result:
    # sent as decimal strings: configsvc converts them exactly (no float rounding)
    payload = {"input_per_1m": a.input, "output_per_1m": a.output, "reason": a.reason}
    body = c.call("PUT", _path(a.name), payload)
    p = body["price"]
    return body, (
        f"price of {body['name']}: input {p['input_per_1m']} USD / 1M tokens, "
        f"output {p['output_per_1m']} USD / 1M tokens (revision {body['mod_revision']})"
    )


def price_list(c: Client, a: argparse.Namespace) -> Result:
    body = c.call("GET", "/v1/prices")
    rows = [[name, p["input_per_1m"], p["output_per_1m"]] for name, p in body["prices"].items()]
    if not rows:
        return body, "no prices (set one with `holdfastctl price set NAME --input X --output Y`)"
    foot = f"\nupdated {when(body['updated_at'])} by {value(body['updated_by'])}"
    return body, table(["RELEASE OR MODEL", "INPUT USD/1M", "OUTPUT USD/1M"], rows) + foot


def price_delete(c: Client, a: argparse.Namespace) -> Result:
    body = c.call("DELETE", _path(a.name), {"reason": a.reason})
    return body, f"price of {body['name']} deleted (revision {body['mod_revision']})"


def register(nouns: Any, leaf: Leaf) -> None:
    """Add ``price`` and its verbs to the parser."""
    verbs = nouns.add_parser(
        "price", help="the fleet's price table for cost budgets and signals"
    ).add_subparsers(dest="verb", required=True, metavar="VERB")
    sp = leaf(verbs, "set", price_set, "set the price of a release or model")
    sp.add_argument("name", metavar="MODEL|RELEASE")
    sp.add_argument("--input", required=True, metavar="USD_PER_1M", help="input tokens")
    sp.add_argument("--output", required=True, metavar="USD_PER_1M", help="output tokens")
    sp.add_argument("--reason", default="")
    leaf(verbs, "list", price_list, "every price")
    sp = leaf(verbs, "delete", price_delete, "remove the price of a release or model")
    sp.add_argument("name", metavar="MODEL|RELEASE")
    sp.add_argument("--reason", default="")
