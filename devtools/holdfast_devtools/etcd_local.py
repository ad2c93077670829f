"""One real etcd process on loopback for tests, the demo and benchmarks.

Each node gets free ports, a temporary directory (data plus ``etcd.log``) and fast-start flags.
Nodes are context managers; anything still running at interpreter exit is killed, so a crashed
test run leaves no etcd behind. Clusters of them are ``holdfast.devtools.etcd_cluster``.

``tls=True`` makes a throwaway CA (``holdfast.devtools.certs``) in the node's directory and serves
clients and peers over mutual TLS; ``enable_auth`` then turns on etcd's own auth through etcdctl.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Final, Self

from holdfast.etcdauth import roles as etcd_roles
from holdfast.etcdauth.etcdctl import EtcdctlTarget, apply
from holdfast.store.security import EtcdSecurity
from holdfast_devtools.certs import LocalPki, make_test_pki
from holdfast_devtools.etcd_host import HOST, EtcdError, Managed, etcd_binary, free_ports, temp_dir

SINGLE_FLAGS: Final = ("--heartbeat-interval", "50", "--election-timeout", "500")

_live: set[EtcdNode] = set()  # strong references: a dropped node is still killed at exit


def _tls_context(pki: LocalPki | None) -> ssl.SSLContext | None:
    if pki is None:
        return None
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(pki.client.cert), str(pki.client.key))
    return context


def _get(url: str, timeout: float, context: ssl.SSLContext | None = None) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:  # noqa: S310
            return str(response.read().decode("utf-8", "replace"))
    except (OSError, urllib.error.URLError):
        return None


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text exposition as ``name{labels}`` -> value; comments and junk skipped."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            continue
    return out


class EtcdNode(Managed):
    """One etcd member on loopback. Ports are fixed at construction, so restarts keep them."""

    def __init__(
        self,
        name: str = "node0",
        *,
        base_dir: Path | None = None,
        client_port: int = 0,
        peer_port: int = 0,
        initial_cluster: str | None = None,
        flags: Sequence[str] = SINGLE_FLAGS,
        tls: bool = False,
        pki: LocalPki | None = None,
    ) -> None:
        self.name = name
        self._own_dir = base_dir is None
        self.dir = temp_dir(f"holdfast-etcd-{name}-") if base_dir is None else base_dir
        self.data_dir = self.dir / "data"
        self.log_path = self.dir / "etcd.log"
        if not client_port or not peer_port:
            client_port, peer_port = free_ports(2)
        if tls and pki is None:
            pki = make_test_pki(self.dir / "pki")
        self.pki = pki if tls else None
        scheme = "https" if tls else "http"
        self.client_url = f"{scheme}://{HOST}:{client_port}"
        self.peer_url = f"{scheme}://{HOST}:{peer_port}"
        self._context = _tls_context(self.pki)
        self.initial_cluster = initial_cluster or f"{name}={self.peer_url}"
        self.flags = tuple(flags)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def argv(self) -> list[str]:
        return [
            etcd_binary(),
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.client_url,
            "--advertise-client-urls", self.client_url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", "holdfast-dev",
            "--snapshot-count", "1000000",
            "--quota-backend-bytes", str(1 << 30),
            "--logger", "zap",
            "--log-level", "warn",
            *self._tls_flags(),
            *self.flags,
        ]  # fmt: skip

    def _tls_flags(self) -> list[str]:
        if self.pki is None:
            return []
        ca, pair = str(self.pki.ca), self.pki.server
        return [
            "--cert-file", str(pair.cert), "--key-file", str(pair.key),
            "--client-cert-auth", "--trusted-ca-file", ca,
            "--peer-cert-file", str(pair.cert), "--peer-key-file", str(pair.key),
            "--peer-client-cert-auth", "--peer-trusted-ca-file", ca,
        ]  # fmt: skip

    def security(self, user: str = "", password: str = "") -> EtcdSecurity:
        """What a client needs to reach this node: the CA and a client certificate if TLS."""
        if self.pki is None:
            return EtcdSecurity(user=user, password=password)
        return EtcdSecurity(
            ca_file=self.pki.ca,
            cert_file=self.pki.client.cert,
            key_file=self.pki.client.key,
            user=user,
            password=password,
        )

    def enable_auth(
        self, env: str, agents: list[str], passwords: dict[str, str], root_password: str
    ) -> list[str]:
        """Create the Holdfast role layout (holdfast.etcd_roles) and turn etcd's auth on."""
        steps = etcd_roles.steps(env, agents, users=True, enable=True)
        target = EtcdctlTarget(endpoints=(self.client_url,), security=self.security())
        return apply(steps, {**passwords, etcd_roles.ROOT: root_password}, target)

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Launch the process without waiting (a cluster member cannot be ready alone)."""
        if self.is_running:
            return self
        self.dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed when the process ends
        self._proc = subprocess.Popen(
            self.argv(), stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        _live.add(self)
        return self

    def healthy(self, timeout: float = 1.0) -> bool:
        body = _get(f"{self.client_url}/health", timeout, self._context)
        try:
            return body is not None and json.loads(body).get("health") == "true"
        except (ValueError, AttributeError):
            return False

    def wait_ready(self, timeout: float = 20.0) -> Self:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise EtcdError(f"etcd {self.name} is not running (exit {code})\n{self.tail()}")
            if self.healthy(timeout=min(1.0, max(0.1, deadline - time.monotonic()))):
                return self
            time.sleep(0.05)
        raise EtcdError(f"etcd {self.name} not healthy after {timeout}s\n{self.tail()}")

    def is_leader(self) -> bool:
        metrics = _get(f"{self.client_url}/metrics", 1.0, self._context) or ""
        return any(line.strip() == "etcd_server_is_leader 1" for line in metrics.splitlines())

    def metrics(self, timeout: float = 5.0) -> dict[str, float]:
        """etcd's Prometheus metrics now: ``name{labels}`` -> value (empty if unreachable)."""
        return parse_metrics(_get(f"{self.client_url}/metrics", timeout, self._context) or "")

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def pause(self, timeout: float = 10.0) -> None:
        """Freeze the process (SIGSTOP): its sockets stay open but nothing answers, like a hung
        host; only timeouts and keepalives can tell.

        Returns once every thread of etcd has stopped. kill() only queues the signal: one thread
        must be scheduled to take it and then stop the others, and until then the rest keep
        serving -- tens of milliseconds on a busy machine, enough to answer a request sent
        right after pause() returned.
        """
        if self._proc is None or self._proc.poll() is not None:
            return
        self._proc.send_signal(signal.SIGSTOP)
        # The parent learns of a stop only when the whole thread group has stopped. WNOWAIT
        # leaves that news (and any exit) for Popen's own waits.
        flags = os.WSTOPPED | os.WEXITED | os.WNOWAIT | os.WNOHANG
        deadline = time.monotonic() + timeout
        while (info := os.waitid(os.P_PID, self._proc.pid, flags)) is None:
            if time.monotonic() > deadline:
                raise EtcdError(f"etcd {self.name} did not stop within {timeout}s of SIGSTOP")
            time.sleep(0.001)
        if info.si_code != os.CLD_STOPPED:
            raise EtcdError(f"etcd {self.name} exited instead of pausing\n{self.tail()}")

    def resume(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            self._proc.send_signal(signal.SIGCONT)  # a paused etcd would never see the SIGTERM
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        self._close_log()

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)
        self._close_log()

    def restart(self, timeout: float = 20.0) -> Self:
        self.stop()
        return self.start().wait_ready(timeout)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        self.kill()
        _live.discard(self)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


@atexit.register
def _kill_leftovers() -> None:
    for node in list(_live):
        node.cleanup()
