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
