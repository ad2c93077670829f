"""Where a relay's CPU goes: sample it with py-spy under closed-loop load and group the samples.

Used by ``python -m bench.overhead --profile`` after the measured phases (sampling slows the
process down, so it never overlaps a measurement). Each sample of the main thread is charged to
the deepest frame of our own code on its stack (``sidecar/``, ``holdfast/``, ``bench/``); a
sample with none of our frames below the entry point is aiohttp's server and the event loop.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Final

OWN_CODE: Final = re.compile(r"\((?:sidecar|holdfast|bench)/")
ENTRY_POINTS: Final = ("main (sidecar/main.py)", "main (bench/bare_relay.py)")
LOOP_RUN: Final = "Runner.run "
SERVER_AND_LOOP: Final = "aiohttp server + event loop (no frame of ours below the entry point)"
SETUP_SCRIPT: Final = Path(__file__).resolve().parent / "setup.sh"


@dataclass(frozen=True, slots=True)
class Hotspot:
    frame: str
    share: float  # of the main thread's busy samples
    callees: tuple[tuple[str, float], ...] = ()  # biggest direct callees and their shares


def ensure_py_spy() -> str:
    """Path of py-spy in this virtualenv, installing it through bench/setup.sh if needed."""
    py_spy = Path(sys.executable).parent / "py-spy"
    if not py_spy.exists():
        subprocess.run(
            ["bash", str(SETUP_SCRIPT)],
            env={**os.environ, "PYTHON": sys.executable},
            check=True,
            timeout=300,
        )
    return str(py_spy)


def start_recording(
    pid: int, seconds: float, out: Path, rate: int = 200
) -> subprocess.Popen[bytes]:
    """py-spy in raw (collapsed stacks) format; it exits after ``seconds``."""
    duration = str(max(1, round(seconds)))
    argv = [ensure_py_spy(), "record", "--pid", str(pid), "--rate", str(rate),
            "--duration", duration, "--format", "raw", "-o", str(out)]  # fmt: skip
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _frame(raw: str) -> str:
    """``func (path/file.py:123)`` -> ``func (path/file.py)``, site-packages paths shortened."""
    raw = re.sub(r":\d+\)$", ")", raw)
    return re.sub(r"\(.*site-packages/", "(", raw)


def _short(frame: str) -> str:
    """``Class.method (pkg/module.py)`` -> ``Class.method``."""
    return frame.split(" (", 1)[0]


def hotspots(collapsed: str, top: int = 15, callees: int = 3) -> tuple[int, list[Hotspot]]:
    """Group the main thread's samples by the deepest frame of our own code, and within each
    group by the frame it called (where the library work under it went)."""
    counts: Counter[str] = Counter()
    below: dict[str, Counter[str]] = {}
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit() or "Thread._bootstrap" in stack:
            continue  # idle helper threads (grpc, executors) are not the request path
        frames = [_frame(f) for f in stack.split(";")]
        depth = max((i for i, f in enumerate(frames) if OWN_CODE.search(f)), default=-1)
        key = frames[depth] if depth >= 0 else frames[-1]
        if key in ENTRY_POINTS:  # nothing of ours below: say which part of aiohttp/the loop
            key = SERVER_AND_LOOP
            depth = next((i for i, f in enumerate(frames) if f.startswith(LOOP_RUN)), depth)
        child = frames[depth + 1] if 0 <= depth < len(frames) - 1 else "(itself)"
        n = int(count)
        counts[key] += n
        below.setdefault(key, Counter())[_short(child)] += n
        total += n
    if not total:
        return 0, []
    return total, [
        Hotspot(
            frame,
            n / total,
            tuple((name, c / total) for name, c in below[frame].most_common(callees)),
        )
        for frame, n in counts.most_common(top)
    ]
