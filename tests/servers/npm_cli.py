"""A coding agent's own CLI from npm (pinned by a package-lock.json under tests/e2e/<name>),
installed with ``npm ci`` on first use; a machine without node and npm skips its tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

E2E = Path(__file__).resolve().parents[1] / "e2e"


def npm_cli(package: str, binary: str, what: str) -> Path:
    """The installed ``binary`` of ``tests/e2e/<package>``; ``what`` names it in a skip."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip(f"{what} needs node and npm, and this machine has neither on PATH")
    path = E2E / package / "node_modules" / ".bin" / binary
    if not path.exists():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=E2E / package,
            check=True,
            timeout=600,
        )
    return path
