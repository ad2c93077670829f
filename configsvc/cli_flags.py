"""`holdfastctl` commands: flags (filled in by its issue)."""

from __future__ import annotations

from typing import Any

from configsvc.commands import Leaf


def register(nouns: Any, leaf: Leaf) -> None:
    """Add this module's nouns and verbs to the parser."""
