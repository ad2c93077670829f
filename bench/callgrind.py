"""Instruction counts of a child process under ``valgrind --tool=callgrind``, and the result
line a measured child prints (``RESULT {json}``) among whatever else it writes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

PREFIX: Final = "RESULT "


def available() -> bool:
    return shutil.which("valgrind") is not None


def emit(result: Mapping[str, Any]) -> None:
    print(PREFIX + json.dumps(result), flush=True)


def result_of(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(PREFIX):
            parsed: dict[str, Any] = json.loads(line[len(PREFIX) :])
            return parsed
    raise RuntimeError(f"no result line in {stdout[-2000:]!r}")


def run(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The child's result, run natively."""
    done = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    return result_of(done.stdout)


def counted(cmd: Sequence[str], env: Mapping[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """(instructions the whole child executed, its result), run under callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--quiet", *cmd],
            capture_output=True, text=True, check=True, timeout=3600, env=env,
        )  # fmt: skip
        totals = re.search(r"^(?:totals|summary): (\d+)", out.read_text(), re.MULTILINE)
        if totals is None:
            raise RuntimeError("callgrind wrote no totals")
        return int(totals.group(1)), result_of(done.stdout)
