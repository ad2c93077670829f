"""The shape every ``holdfastctl`` sub-command module shares (kept apart to avoid import cycles).

A command takes the client and its parsed arguments and returns (the API's JSON body, its
human rendering); ``--json`` prints the first, otherwise the second.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from configsvc.cli.client import Client

Command = Callable[[Client, argparse.Namespace], tuple[dict[str, Any], str]]
# leaf(parent_subparsers, name, command, help) -> the new sub-parser
Leaf = Callable[[Any, str, Command | None, str], Any]
PROVIDER_CHANGE_HELP = (
    "place a release of another provider kind beside this agent's (only for an agent that "
    "speaks both APIs: the sidecar refuses requests a release's provider does not speak)"
)


def provider_change_option(sp: Any) -> None:
    """``--allow-provider-change`` (configsvc.releases.providers)."""
    sp.add_argument("--allow-provider-change", action="store_true", help=PROVIDER_CHANGE_HELP)


def with_provider_change(payload: dict[str, Any], a: argparse.Namespace) -> dict[str, Any]:
    if a.allow_provider_change:
        payload["allow_provider_change"] = True
    return payload
