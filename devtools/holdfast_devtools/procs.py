"""Start Holdfast's own processes for the demo, tests and benchmarks, and stop them cleanly.

Each process logs JSON lines to a file; ``start`` waits for its ``*_listening`` event and reads
the bound port from it, so callers can pass ``--listen 127.0.0.1:0`` and never race on ports.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

BIN_DIR = Path(sys.executable).parent


class ProcessFailed(RuntimeError):
    """A managed process exited early or never became ready; the message has its log tail."""


def script(name: str) -> str:
    """Path of one of our console scripts in the running virtualenv (falls back to PATH)."""
    candidate = BIN_DIR / name
    return str(candidate) if candidate.exists() else name


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    log_path: Path
    ready_event: str
    env: dict[str, str] = field(default_factory=dict)
    cpu: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    _log: IO[bytes] | None = None
    _offset: int = 0

    def start(self, timeout: float = 20.0) -> ManagedProcess:
        return self.spawn().ready(timeout)

    def spawn(self) -> ManagedProcess:
        """Start the process without waiting (``ready`` waits): several can boot at once."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        offset = self.log_path.stat().st_size
        argv = self.argv
        if self.cpu is not None:
            argv = ["taskset", "-c", str(self.cpu), *argv]
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=self._log,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        self._offset = offset
        return self

    def ready(self, timeout: float = 20.0) -> ManagedProcess:
        event = self._wait_for(self.ready_event, self._offset, timeout)
        self.port = int(event.get("port", 0))
        return self

    def _wait_for(self, event_name: str, offset: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_path.read_bytes()[offset:].splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict) and event.get("event") == event_name:
                    return event
            if self.proc is not None and self.proc.poll() is not None:
                raise ProcessFailed(
                    f"{self.name} exited with {self.proc.returncode}\n{self.tail()}"
                )
            time.sleep(0.05)
        self.kill()
        raise ProcessFailed(f"{self.name} not ready after {timeout}s\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def log_events(self) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for line in self.log_path.read_bytes().splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def fakellm(log_dir: Path, *args: str, cpu: int | None = None) -> ManagedProcess:
    return ManagedProcess(
        name="fakellm",
        argv=[script("holdfast-fakellm"), "--listen", "127.0.0.1:0", *args],
        log_path=log_dir / "fakellm.log",
        ready_event="fakellm_listening",
        cpu=cpu,
    )


def configsvc(
    log_dir: Path, etcd: Sequence[str], env: str, token: str, *args: str
) -> ManagedProcess:
    """A configsvc replica; replicas started with one token share one console secret, as
    replicas of one deployment must (sessions, and the console asking an agent's owners)."""
    secret = hashlib.sha256(f"holdfast console secret {token}".encode()).hexdigest()
    return ManagedProcess(
        name="configsvc",
        argv=[
            script("holdfastctl"),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--etcd",
            ",".join(etcd),
            "--env",
            env,
            *args,
        ],
        log_path=log_dir / "configsvc.log",
        ready_event="configsvc_listening",
        env={"HOLDFAST_TOKEN": token, "HOLDFAST_CONSOLE_SECRET": secret},
    )


def sidecar(
    log_dir: Path,
    agent: str,
    etcd: Sequence[str],
    env: str,
    state_dir: Path,
    *args: str,
    extra_env: Mapping[str, str] | None = None,
    cpu: int | None = None,
    name: str = "sidecar",
    port: int = 0,
    sidecar_token: str = "",
    program: str | None = None,
) -> ManagedProcess:
    """A sidecar; ``sidecar_token`` is the configsvc token its health beats carry; ``program``:
    another build's ``holdfast-sidecar`` (a benchmark's baseline), default ours."""
    variables = dict(extra_env or {})
    if sidecar_token:
        variables["HOLDFAST_SIDECAR_TOKEN"] = sidecar_token
    return ManagedProcess(
        name=name,
        argv=[
            program or script("holdfast-sidecar"),
            "--agent",
            agent,
            "--listen",
            f"127.0.0.1:{port}",
            "--etcd",
            ",".join(etcd),
            "--env",
            env,
            "--state-dir",
            str(state_dir),
            *args,
        ],
        log_path=log_dir / f"{name}.log",
        ready_event="sidecar_listening",
        env=variables,
        cpu=cpu,
    )
