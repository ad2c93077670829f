"""Other gateways as paths of the same run: Portkey's AI gateway (Node) and LiteLLM's proxy
(Python), installed by ``bench/setup.sh --peers`` under ``bench/.peers/`` (never into the
project's virtualenv, never committed), each started here pinned to the proxy core and pointed
at the fake upstream.

* **Portkey** (``@portkey-ai/gateway``): ``node build/start-server.js --port=N --headless``
  with ``NODE_ENV=production`` (no console UI). It has no config file: each request names its
  provider and upstream in headers (``x-portkey-provider: openai``, ``x-portkey-custom-host``),
  which the load generator sends. Ready when ``GET /`` answers. It needs nothing from the
  network to start.
* **LiteLLM** (``litellm[proxy]``): ``litellm --config FILE --num_workers 1`` with a generated
  config that maps the bench's models to ``openai/<model>`` at the fake upstream's ``/v1``. It
  refuses to start without a master key, so it gets a random one and the load sends it as a
  bearer token. No database (none configured); offline: the model cost map from the package
  (``LITELLM_LOCAL_MODEL_COST_MAP``, else it fetches one at start), telemetry off
  (``LITELLM_TELEMETRY_DISABLED``), logs at ERROR. Ready when ``GET /health/liveliness``
  answers; its start-up takes 10-60 s.

Each peer's CPU is accounted over its whole process tree (bench/cpu.py) and its RSS likewise.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from holdfast_devtools import procs

PEERS_DIR: Final = Path(__file__).resolve().parent / ".peers"
PORTKEY: Final = "portkey"
LITELLM: Final = "litellm"
KNOWN: Final = (PORTKEY, LITELLM)
NAMES: Final = {PORTKEY: "Portkey", LITELLM: "LiteLLM"}  # the paths' names in the results

PORTKEY_PACKAGE: Final = "node_modules/@portkey-ai/gateway"
LITELLM_PROGRAM: Final = "venv/bin/litellm"


class PeerError(RuntimeError):
    """A peer asked for is not installed, or cannot be started."""


@dataclass
class ForeignProcess(procs.ManagedProcess):
    """A server that is not ours: no JSON ``*_listening`` line to wait for, so it listens on a
    port chosen here and is ready once ``probe_path`` answers 200."""

    probe_path: str = "/"

    def ready(self, timeout: float = 20.0) -> ForeignProcess:
        deadline = time.monotonic() + timeout
        url = f"{self.url}{self.probe_path}"
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise procs.ProcessFailed(
                    f"{self.name} exited with {self.proc.returncode}\n{self.tail()}"
                )
            if _answers(url):
                return self
            time.sleep(0.2)
        self.kill()
        raise procs.ProcessFailed(f"{self.name} not ready after {timeout}s\n{self.tail()}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def free_port() -> int:
    """A loopback port nobody listens on now (the peer binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Peer:
    """One started peer: its process, the headers every request to it carries, its version."""

    key: str
    process: ForeignProcess
    headers: tuple[tuple[str, str], ...]
    version: str
    ready_timeout: float
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return NAMES[self.key]


def installed(root: Path = PEERS_DIR) -> list[str]:
    """The peers ``bench/setup.sh --peers`` has installed under ``root``."""
    found = []
    if (root / PORTKEY / PORTKEY_PACKAGE / "build" / "start-server.js").exists():
        found.append(PORTKEY)
    if (root / LITELLM / LITELLM_PROGRAM).exists():
        found.append(LITELLM)
    return found


def choose(spec: str, available: Sequence[str]) -> tuple[list[str], list[str]]:
    """The peers to run for ``--peers SPEC`` and notes on the ones left out.

    ``auto``: every installed peer; ``none``: none; else a comma-separated list, each of which
    must be installed (a peer asked for by name and missing is an error, not a silent skip)."""
    spec = spec.strip().lower()
    if spec == "none":
        return [], []
    if spec == "auto":
        missing = [k for k in KNOWN if k not in available]
        notes = (
            [f"Not run (not installed; `bench/setup.sh --peers`): {', '.join(missing)}."]
            if missing
            else []
        )
        return [k for k in KNOWN if k in available], notes
    wanted = [w.strip() for w in spec.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in KNOWN]
    if unknown:
        raise PeerError(f"unknown peer(s) {', '.join(unknown)}; known: {', '.join(KNOWN)}")
    absent = [w for w in wanted if w not in available]
    if absent:
        raise PeerError(
            f"peer(s) {', '.join(absent)} not installed under {PEERS_DIR}: "
            "run `bench/setup.sh --peers` first"
        )
    return list(dict.fromkeys(wanted)), []


def litellm_config(models: Sequence[str], upstream_v1: str) -> dict[str, object]:
    """LiteLLM's proxy config: each bench model routed as ``openai/<model>`` to the fake
    upstream, nothing else on (no callbacks, no cache, no database). Written as JSON, which is
    YAML too."""
    return {
        "model_list": [
            {
                "model_name": model,
                "litellm_params": {
                    "model": f"openai/{model}",
                    "api_base": upstream_v1,
                    "api_key": "bench",  # the fake upstream takes any key
                },
            }
            for model in models
        ],
        "litellm_settings": {"set_verbose": False, "suppress_debug_info": True},
    }


def portkey_headers(upstream_v1: str) -> tuple[tuple[str, str], ...]:
    return (
        ("x-portkey-provider", "openai"),
        ("x-portkey-custom-host", upstream_v1),
        ("Authorization", "Bearer bench"),  # forwarded to the fake upstream, which takes any
    )


def _portkey(
    root: Path, logs: Path, upstream_v1: str, cpu: int | None
) -> tuple[ForeignProcess, tuple[tuple[str, str], ...], str]:
    node = shutil.which("node")
    if node is None:
        raise PeerError("Portkey's gateway needs `node` (20 or later) on PATH")
    package = root / PORTKEY / PORTKEY_PACKAGE
    port = free_port()
    process = ForeignProcess(
        name="portkey",
        argv=[node, str(package / "build" / "start-server.js"), f"--port={port}", "--headless"],
        log_path=logs / "portkey.log",
        ready_event="",
        env={"NODE_ENV": "production"},
        cpu=cpu,
        port=port,
        probe_path="/",
    )
    version = json.loads((package / "package.json").read_text()).get("version", "?")
    return process, portkey_headers(upstream_v1), str(version)


def _litellm(
    root: Path, logs: Path, upstream_v1: str, models: Sequence[str], cpu: int | None
) -> tuple[ForeignProcess, tuple[tuple[str, str], ...], str]:
    home = root / LITELLM
    config = logs / "litellm.config.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps(litellm_config(models, upstream_v1), indent=2))
    key = "sk-bench-" + secrets.token_hex(16)
    port = free_port()
    argv = [str(home / LITELLM_PROGRAM), "--config", str(config), "--host", "127.0.0.1",
            "--port", str(port), "--num_workers", "1"]  # fmt: skip
    process = ForeignProcess(
        name="litellm",
        argv=argv,
        log_path=logs / "litellm.log",
        ready_event="",
        env={
            "LITELLM_MASTER_KEY": key,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_TELEMETRY_DISABLED": "true",
            "LITELLM_LOG": "ERROR",
            "LITELLM_MODE": "PRODUCTION",  # no .env file read from the working directory
            "DISABLE_ADMIN_UI": "True",
            "PYTHONPATH": "",  # its own virtualenv only, never the harness's path
        },
        cpu=cpu,
        port=port,
        probe_path="/health/liveliness",
    )
    return process, (("Authorization", f"Bearer {key}"),), _dist_version(home / "venv", "litellm")


def _dist_version(venv: Path, dist: str) -> str:
    """The installed version of ``dist`` in another virtualenv, from its metadata folder."""
    found = sorted(venv.glob(f"lib/python*/site-packages/{dist}-*.dist-info"))
    return found[-1].name.removeprefix(f"{dist}-").removesuffix(".dist-info") if found else "?"


def prepare(
    keys: Sequence[str],
    *,
    logs: Path,
    upstream_url: str,
    models: Sequence[str],
    cpu: int | None,
    root: Path = PEERS_DIR,
) -> list[Peer]:
    """The peers' processes, configured for the fake upstream at ``upstream_url`` (not started:
    the caller spawns them early, since LiteLLM takes long to start, and waits later)."""
    upstream_v1 = upstream_url.rstrip("/") + "/v1"
    peers = []
    for key in keys:
        if key == PORTKEY:
            process, headers, version = _portkey(root, logs, upstream_v1, cpu)
            peers.append(Peer(key, process, headers, version, ready_timeout=60.0))
        elif key == LITELLM:
            process, headers, version = _litellm(root, logs, upstream_v1, models, cpu)
            peers.append(Peer(key, process, headers, version, ready_timeout=240.0))
        else:
            raise PeerError(f"unknown peer {key!r}")
    return peers
