"""holdfastctl stays quick to start: a command loads the standard library, the CLI's own modules
and a few light shared ones, never the server, aiohttp or another third-party package.

Checked in a fresh interpreter, the way an operator runs it; the import-linter contract
``configsvc-cli-light`` (pyproject.toml) says the same of the import graph.
"""

from __future__ import annotations

import json
import subprocess
import sys

# What a command may load besides the standard library, configsvc.cli and holdfast's modules.
LIGHT_CONFIGSVC = frozenset(
    {
        "configsvc",
        "configsvc.limits",
        "configsvc.settings",
        "configsvc.server",  # its face is a docstring, for ...
        "configsvc.server.limits",  # ... serve's options
        "configsvc.prompts",  # its face is a docstring, for ...
        "configsvc.prompts.settings",  # ... `prompt eval`'s wait
    }
)
HEAVY = ("aiohttp", "aetcd", "grpc", "msgpack", "orjson", "structlog", "jsonschema", "re2")

PROBE = """
import json, sys
before = set(sys.modules)
from configsvc.cli import main
main.build_parser()
# A whole command, to the point where it finds nobody listening (port 1 on loopback).
code = main.main(["--server", "http://127.0.0.1:1", "--timeout", "2", "release", "list", "a1"])
print(json.dumps({"code": code, "loaded": sorted(set(sys.modules) - before)}))
"""


def loaded_by_a_command() -> tuple[int, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return result["code"], result["loaded"]


def test_a_command_loads_only_the_standard_library_and_light_modules() -> None:
    code, loaded = loaded_by_a_command()
    assert code == 3  # unreachable: the command ran its whole client path
    stdlib = sys.stdlib_module_names
    foreign = [
        m
        for m in loaded
        if m.split(".")[0] not in stdlib
        and not m.startswith(("configsvc.cli", "holdfast."))
        and m not in LIGHT_CONFIGSVC | {"holdfast"}
    ]
    assert foreign == []
    assert not [m for m in loaded if m.split(".")[0] in HEAVY]
    assert not [m for m in loaded if m.startswith("sidecar")]
