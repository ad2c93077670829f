"""The processes under test, started the real way and stopped on the way out.

etcd (a real single node), ``holdfastctl serve``, the fake upstream, the sidecar configured
through ``holdfastctl release create`` / ``route set-stable`` (so its config arrives by its etcd
watch, as in production), and the bare relay. The proxies are pinned to one core, the fake
upstream to the other (with the load generator: the harness pins itself before starting
anything, and children inherit that).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from holdfast_devtools import procs
from holdfast_devtools.etcd_local import EtcdNode

AGENT: Final = "bench"
ENV: Final = "bench"
FAST_RELEASE: Final = "fast"
STREAM_RELEASE: Final = "stream"
FAST_MODEL: Final = "bench-fast"
STREAM_MODEL: Final = "bench-stream"
REPO_ROOT: Final = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Cores:
    """Where things run: ``proxy`` for the process under test, ``load`` for everything else.

    ``None`` for both on a one-core machine, where pinning would only serialise things."""

    proxy: int | None
    load: int | None
    usable: int

    @classmethod
    def detect(cls) -> Cores:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            return cls(None, None, len(cores))
        return cls(cores[0], cores[1], len(cores))

    def pin_self(self) -> None:
        if self.load is not None:
            os.sched_setaffinity(0, {self.load})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One way to reach the fake upstream; ``pid`` is the relay in between, if any."""

    name: str
    base_url: str
    fast_model: str
    stream_model: str
    pid: int | None


@dataclass
class Stack:
    fake: procs.ManagedProcess
    sidecar: procs.ManagedProcess
    bare: procs.ManagedProcess
    configsvc: procs.ManagedProcess
    token: str
    etcd_url: str

    @property
    def fake_pid(self) -> int:
        return _pid(self.fake)

    @property
    def paths(self) -> list[Endpoint]:
        return [
            Endpoint("direct", self.fake.url, FAST_MODEL, STREAM_MODEL, None),
            Endpoint("bare relay", self.bare.url, FAST_MODEL, STREAM_MODEL, _pid(self.bare)),
            Endpoint("sidecar", self.sidecar.url, AGENT, AGENT, _pid(self.sidecar)),
        ]

    def ctl(self, *args: str) -> str:
        """``holdfastctl`` as an operator runs it; raises with its stderr when it refuses."""
        result = subprocess.run(
            [procs.script("holdfastctl"), "--server", self.configsvc.url, *args],
            env={**os.environ, "HOLDFAST_TOKEN": self.token, "HOLDFAST_ACTOR": "bench"},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"holdfastctl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def set_stable(self, release: str, timeout: float = 20.0) -> None:
        """Point the agent at ``release`` and wait until the sidecar serves it."""
        self.ctl("route", "set-stable", AGENT, release, "--reason", "bench phase")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = _get_json(f"{self.sidecar.url}/status")
            if ((status or {}).get("route") or {}).get("stable") == release:
                return
            time.sleep(0.05)
        raise RuntimeError(f"sidecar did not switch to release {release!r} in {timeout:g}s")


def _pid(proc: procs.ManagedProcess) -> int:
    assert proc.proc is not None, f"{proc.name} is not running"
    return proc.proc.pid


def _get_json(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.loads(resp.read())
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return body if isinstance(body, dict) else None


def _put_json(url: str, payload: dict[str, Any]) -> None:
    req = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        resp.read()


def _started(stack: ExitStack, proc: procs.ManagedProcess) -> procs.ManagedProcess:
    stack.callback(proc.stop)
    return proc.start()


@contextmanager
def start_stack(
    base: Path, cores: Cores, *, stream_tokens: int, token_interval_ms: float
) -> Iterator[Stack]:
    """Everything up and configured: the sidecar serves release ``fast`` when this yields."""
    logs = base / "logs"
    token = secrets.token_urlsafe(16)
    with ExitStack() as stack:
        etcd = stack.enter_context(EtcdNode(base_dir=base / "etcd"))
        fake = _started(stack, procs.fakellm(logs, cpu=cores.load))
        _put_json(
            f"{fake.url}/_control/models/{STREAM_MODEL}",
            {"completion_tokens": stream_tokens, "token_interval_ms": token_interval_ms},
        )
        svc = _started(stack, procs.configsvc(logs, [etcd.client_url], ENV, token))
        bare = _started(
            stack,
            procs.ManagedProcess(
                name="bare_relay",
                argv=[sys.executable, "-m", "bench.bare_relay", "--upstream", fake.url],
                log_path=logs / "bare_relay.log",
                ready_event="bare_relay_listening",
                env={"PYTHONPATH": str(REPO_ROOT)},
                cpu=cores.proxy,
            ),
        )
        side = _started(
            stack,
            procs.sidecar(
                logs,
                AGENT,
                [etcd.client_url],
                ENV,
                base / "state",
                cpu=cores.proxy,
                sidecar_token=token,
            ),
        )
        result = Stack(fake, side, bare, svc, token, etcd.client_url)
        for release, model in ((FAST_RELEASE, FAST_MODEL), (STREAM_RELEASE, STREAM_MODEL)):
            result.ctl(
                "release", "create", AGENT, release, "--model", model,
                "--base-url", f"{fake.url}/v1",
            )  # fmt: skip
        result.set_stable(FAST_RELEASE)
        yield result
