"""``python -m bench.memory``: where the sidecar's resident memory goes.

Two measurements, both reproducible on a quiet machine:

1. Imports, by group: a fresh interpreter imports the sidecar's dependencies one group at a time
   in the order ``holdfast-sidecar`` needs them, then the sidecar itself, and prints RSS and USS
   (``/proc/self/smaps_rollup``: pages only this process maps) after each group. A group's
   figure is what it adds on top of the groups before it.
2. The running sidecar, started the real way by bench/stack.py (etcd, configsvc, the fake
   upstream, pinning, a budget, metrics: issue 20's "every feature on") with the same
   arguments as ``python -m bench.overhead``: RSS/USS after start, after a fixed load (the
   overhead bench's shapes: open loop, new sessions, closed loop, streaming), and the
   resident memory by mapping (anonymous heap vs each shared library).

Both are measured twice: in this checkout's ``.venv`` (what ``python -m bench.overhead``
runs), and "as deployed": the same code with the packages only the ``dev`` extra brings hidden
(rich, pygments, colorama: import-linter and mkdocs-material need them, and structlog imports
rich whenever it is installed, ~5 MB, though Holdfast's log renderers never use it). The
container image (deploy/docker/Dockerfile) installs no dev extra, so that is what runs there.
Hiding is a directory of stand-ins that raise ImportError, put first on ``PYTHONPATH``.

Prints a report to stdout (bench/RESULTS.md, "Memory", quotes one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import uvloop

from bench import phases
from bench.loadgen import closed_loop, open_loop
from bench.stack import STREAM_RELEASE, Cores, Endpoint, Stack, start_stack

MB: Final = 1024 * 1024

# What ``holdfast-sidecar`` imports, grouped: each group's modules are imported together, in
# this order, so each figure is what that group adds on top of everything above it.
IMPORT_GROUPS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    ("asyncio + ssl (the interpreter's own)", ("asyncio", "ssl", "json", "logging")),
    ("uvloop", ("uvloop",)),
    ("aiohttp (client + server)", ("aiohttp", "aiohttp.web")),
    ("structlog", ("structlog",)),
    ("msgpack, orjson", ("msgpack", "orjson")),
    ("prometheus_client", ("prometheus_client",)),
    ("grpc + protobuf + aetcd (etcd client)", ("grpc", "aetcd")),
    ("holdfast (shared package)", ("holdfast.logs", "holdfast.store.factory", "holdfast.dialects")),
    ("sidecar.settings", ("sidecar.settings",)),
    ("sidecar.app (everything else)", ("sidecar.app",)),
    ("sidecar.main", ("sidecar.main",)),
)

_IMPORT_PROBE: Final = """
import importlib, json, sys
def mem():
    out = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Private_Clean", "Private_Dirty", "Anonymous"):
                out[key] = int(rest.split()[0]) * 1024
    return {"rss": out["Rss"], "uss": out["Private_Clean"] + out["Private_Dirty"],
            "anon": out["Anonymous"]}
groups = json.loads(sys.argv[1])
rows = [["python (bare interpreter)", mem(), len(sys.modules)]]
for name, modules in groups:
    for m in modules:
        importlib.import_module(m)
    rows.append([name, mem(), len(sys.modules)])
heavy = [m for m in sys.argv[2].split(",") if m and m in sys.modules]
print(json.dumps({"rows": rows, "loaded": heavy}))
"""

# Modules that only some configurations need: the report says which of them a bare
# ``import sidecar.main`` loads. json_logic still is (~0.1 MB): the flag rules' operation table
# is built when holdfast.flags.rules is imported.
OPTIONAL_MODULES: Final = (
    "psutil",
    "difflib",
    "statistics",
    "jsonschema_rs",
    "jsonschema",
    "re2",
    "zoneinfo",
    "json_logic",
    "opentelemetry",
    "rich",
    "pygments",
    "mcp",
)


@dataclass(frozen=True, slots=True)
class Mem:
    rss: int
    uss: int
    anon: int

    @classmethod
    def of(cls, pid: int) -> Mem:
        fields: dict[str, int] = {}
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("Rss", "Private_Clean", "Private_Dirty", "Anonymous"):
                    fields[key] = int(rest.split()[0]) * 1024
        return cls(
            fields["Rss"], fields["Private_Clean"] + fields["Private_Dirty"], fields["Anonymous"]
        )

    def show(self) -> str:
        rss, uss, anon = self.rss / MB, self.uss / MB, self.anon / MB
        return f"RSS {rss:6.1f} MB  USS {uss:6.1f} MB  anon {anon:6.1f} MB"


# Installed here only because the dev extra's tools need them (``pip show`` lists them as
# required by import-linter and mkdocs-material, nothing of the runtime).
DEV_ONLY: Final = ("rich", "pygments", "colorama")


def hide_dev_only(where: Path) -> dict[str, str]:
    """Stand-ins for DEV_ONLY under ``where``; the environment that puts them first."""
    for name in DEV_ONLY:
        package = where / name
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(
            f"raise ImportError('{name} is hidden: bench.memory measures an install without "
            "the dev extra')\n"
        )
    path = os.pathsep.join(p for p in (str(where), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path}


def import_breakdown(
    env: Mapping[str, str] | None = None,
) -> tuple[list[tuple[str, Mem, int]], list[str]]:
    """Run the import probe in a fresh interpreter; (group, memory after it, modules loaded)."""
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _IMPORT_PROBE,
            json.dumps(IMPORT_GROUPS),
            ",".join(OPTIONAL_MODULES),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )
    data = json.loads(out.stdout)
    rows = [(name, Mem(m["rss"], m["uss"], m["anon"]), n) for name, m, n in data["rows"]]
    return rows, data["loaded"]


def mappings(pid: int, top: int = 12) -> list[tuple[str, int]]:
    """Resident bytes by mapping (anonymous memory as one row), largest first."""
    by: dict[str, int] = {}
    name = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(maxsplit=6)
            if len(first) >= 5 and "-" in first[0] and ":" not in first[0]:
                path = first[5].strip() if len(first) > 5 else ""
                name = Path(path).name if path.startswith("/") else (path or "[anonymous]")
            elif line.startswith("Rss:"):
                by[name] = by.get(name, 0) + int(line.split()[1]) * 1024
    return sorted(by.items(), key=lambda kv: -kv[1])[:top]


@dataclass(frozen=True, slots=True)
class Load:
    """The fixed load, in seconds per shape (the overhead bench's shapes, shorter)."""

    open_loop_rate: float = 200.0
    open_loop_seconds: float = 10.0
    first_turn_rate: float = 50.0
    first_turn_seconds: float = 6.0
    concurrency: int = 64
    closed_loop_seconds: float = 20.0
    stream_rate: float = 20.0
    stream_seconds: float = 12.0


async def run_load(stack: Stack, load: Load) -> dict[str, Mem]:
    """Drive the sidecar through the load; its memory after each shape."""
    pid = stack.sidecar.proc.pid if stack.sidecar.proc else 0
    sidecar = next(e for e in stack.paths if e.name == "sidecar")
    seen: dict[str, Mem] = {"after start": Mem.of(pid)}
    await phases.warm_up([sidecar], load.concurrency, 1.0)
    seen["after warm-up"] = Mem.of(pid)
    await open_loop(phases.chat_target(sidecar, stream=False), load.open_loop_rate,
                    load.open_loop_seconds)  # fmt: skip
    first = Endpoint("first", sidecar.base_url, sidecar.fast_model, sidecar.stream_model,
                     sidecar.pid, first_turns=True)  # fmt: skip
    target = phases.chat_target(first, stream=False)
    count = round(load.first_turn_rate * load.first_turn_seconds)
    await open_loop(target, load.first_turn_rate, load.first_turn_seconds,
                    requests=phases.new_sessions(target, count))  # fmt: skip
    seen["after open loop + first turns"] = Mem.of(pid)
    await closed_loop(phases.chat_target(sidecar, stream=False), load.concurrency,
                      load.closed_loop_seconds)  # fmt: skip
    seen["after closed loop"] = Mem.of(pid)
    await asyncio.to_thread(stack.set_stable, STREAM_RELEASE)
    streaming = next(e for e in stack.paths if e.name == "sidecar")
    await phases.warm_up([streaming], phases.STREAM_POOL, 0.5)
    await open_loop(phases.chat_target(streaming, stream=True), load.stream_rate,
                    load.stream_seconds, pool=phases.STREAM_POOL)  # fmt: skip
    seen["after streaming (the end)"] = Mem.of(pid)
    return seen


def print_imports(title: str, env: Mapping[str, str] | None) -> None:
    rows, loaded = import_breakdown(env)
    print(f"imports, {title} (a fresh interpreter, groups in order; + is what the group adds)")
    prev = rows[0][1]
    for name, mem, count in rows:
        print(f"  {name:42s} {mem.show()}  +{(mem.rss - prev.rss) / MB:5.1f} MB RSS  "
              f"{count:4d} modules")  # fmt: skip
        prev = mem
    print(f"  optional modules loaded by `import sidecar.main`: {', '.join(loaded) or 'none'}")


def run_sidecar(title: str, env: Mapping[str, str] | None, load: Load) -> None:
    cores = Cores.detect()
    with (
        tempfile.TemporaryDirectory(prefix="holdfast-memory-") as tmp,
        start_stack(
            Path(tmp), cores, stream_tokens=200, token_interval_ms=1.0, sidecar_env=env
        ) as stack,
    ):
        seen = uvloop.run(run_load(stack, load))
        pid = stack.sidecar.proc.pid if stack.sidecar.proc else 0
        top = mappings(pid)
        bare = Mem.of(stack.bare.proc.pid) if stack.bare.proc else None
    print(f"the running sidecar, {title} (every feature on: pinning, a budget, metrics)")
    for what, mem in seen.items():
        print(f"  {what:42s} {mem.show()}")
    if bare is not None:
        print(f"  {'bare relay (idle, for scale)':42s} {bare.show()}")
    print("  resident memory by mapping, at the end:")
    for name, size in top:
        print(f"    {name:40s} {size / MB:6.1f} MB")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    p.add_argument("--imports-only", action="store_true", help="skip the running sidecar")
    p.add_argument("--scale", type=float, default=1.0, help="multiply the load's durations")
    p.add_argument(
        "--install",
        choices=("both", "venv", "deployed"),
        default="both",
        help="measure this .venv, the install without the dev extra, or both (default)",
    )
    args = p.parse_args(argv)
    s = args.scale
    load = Load(open_loop_seconds=10 * s, first_turn_seconds=6 * s, closed_loop_seconds=20 * s,
                stream_seconds=12 * s)  # fmt: skip
    Cores.detect().pin_self()  # the load generator and the fake upstream off the sidecar's core
    with tempfile.TemporaryDirectory(prefix="holdfast-hidden-") as hidden:
        installs: list[tuple[str, Mapping[str, str] | None]] = []
        if args.install in ("both", "venv"):
            installs.append(("this .venv", None))
        if args.install in ("both", "deployed"):
            installs.append(("as deployed (no dev extra)", hide_dev_only(Path(hidden))))
        for title, env in installs:
            print_imports(title, env)
        if not args.imports_only:
            for title, env in installs:
                run_sidecar(title, env, load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
