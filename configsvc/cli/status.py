"""``holdfastctl status [AGENT]``: every release of an agent at a glance, from fleet health."""

from __future__ import annotations

import argparse
from typing import Any

from configsvc.cli.client import Client
from configsvc.cli.commands import Leaf
from configsvc.cli.render import health as render_health

WINDOWS = ("1m", "5m", "since_start")


def status(c: Client, a: argparse.Namespace) -> tuple[dict[str, Any], str]:
    query = {"agent": a.agent} if a.agent else None
    body = c.call("GET", "/v1/status", query=query)
    return body, render_health.status(body, a.window)


def register(nouns: Any, leaf: Leaf) -> None:
    """Add ``status``: a noun without verbs."""
    sp = leaf(nouns, "status", status, "releases, traffic and functional health at a glance")
    sp.add_argument("agent", nargs="?", default=None)
    sp.add_argument("--window", choices=WINDOWS, default="1m", help="default %(default)s")
