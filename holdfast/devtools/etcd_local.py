"""Real etcd processes on loopback for tests, the demo and benchmarks.

Each node gets free ports, a temporary directory (data plus ``etcd.log``) and fast-start flags.
Nodes and clusters are context managers; anything still running at interpreter exit is killed,
so a crashed test run leaves no etcd behind.

``tls=True`` makes a throwaway CA (``holdfast.devtools.certs``) in the node's directory and serves
clients and peers over mutual TLS; ``enable_auth`` then turns on etcd's own auth through etcdctl.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

from holdfast import etcd_roles
from holdfast.devtools.certs import LocalPki, make_test_pki
from holdfast.etcdctl import EtcdctlTarget, apply
from holdfast.store.security import EtcdSecurity

ETCD_BIN_ENV: Final = "HOLDFAST_ETCD_BIN"
HOST: Final = "127.0.0.1"
SINGLE_FLAGS: Final = ("--heartbeat-interval", "50", "--election-timeout", "500")
# Slower than SINGLE_FLAGS so that a busy 2-core test machine does not look like a dead leader.
CLUSTER_FLAGS: Final = ("--heartbeat-interval", "100", "--election-timeout", "1000")

_live: set[EtcdNode] = set()  # strong references: a dropped node is still killed at exit


def _temp_dir(prefix: str) -> Path:
    # tmpfs makes etcd's fsyncs free, which keeps a loaded test machine from missing heartbeats.
    shm = Path("/dev/shm")  # noqa: S108 - a private mkdtemp below it
    root = os.environ.get("HOLDFAST_ETCD_TMP") or (str(shm) if os.access(shm, os.W_OK) else None)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


class EtcdError(RuntimeError):
    """etcd is missing, exited early or never became ready; the message has its log tail."""


def free_port(host: str = HOST) -> int:
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = HOST) -> list[int]:
    """Distinct free ports: all sockets stay bound until every port is chosen."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def etcd_binary() -> str:
    """``$HOLDFAST_ETCD_BIN``, else ``etcd`` on PATH."""
    configured = os.environ.get(ETCD_BIN_ENV)
    if configured:
        if not os.access(configured, os.X_OK):
            raise EtcdError(f"{ETCD_BIN_ENV}={configured} is not an executable file")
        return configured
    found = shutil.which("etcd")
    if found is None:
        raise EtcdError(
            f"no etcd binary: run scripts/bootstrap.sh to install one, or set {ETCD_BIN_ENV}"
        )
    return found


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


class _Managed:
    """Context-manager plumbing shared by nodes and clusters: start and wait, always clean up."""

    def start(self) -> Self:
        raise NotImplementedError

    def wait_ready(self, timeout: float = 30.0) -> Self:
        raise NotImplementedError

    def cleanup(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            return self.start().wait_ready()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()


class EtcdNode(_Managed):
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
        self.dir = _temp_dir(f"holdfast-etcd-{name}-") if base_dir is None else base_dir
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

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): its sockets stay open but nothing answers, like a hung
        host; only timeouts and keepalives can tell."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGSTOP)

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


class EtcdCluster(_Managed):
    """N members (3 by default) forming one cluster on loopback."""

    def __init__(self, size: int = 3, *, base_dir: Path | None = None, tls: bool = False) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one member")
        self._own_dir = base_dir is None
        self.dir = _temp_dir("holdfast-etcd-cluster-") if base_dir is None else base_dir
        self.pki = make_test_pki(self.dir / "pki") if tls else None  # one CA for all members
        scheme = "https" if tls else "http"
        ports = free_ports(2 * size)
        names = [f"node{i}" for i in range(size)]
        initial = ",".join(f"{n}={scheme}://{HOST}:{ports[2 * i + 1]}" for i, n in enumerate(names))
        self.nodes = [
            EtcdNode(
                name,
                base_dir=self.dir / name,
                client_port=ports[2 * i],
                peer_port=ports[2 * i + 1],
                initial_cluster=initial,
                flags=CLUSTER_FLAGS,
                tls=tls,
                pki=self.pki,
            )
            for i, name in enumerate(names)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [node.client_url for node in self.nodes]

    def start(self) -> Self:
        for node in self.nodes:
            node.start()
        return self

    def wait_ready(self, timeout: float = 30.0) -> Self:
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.is_running:
                node.wait_ready(max(0.1, deadline - time.monotonic()))
        return self

    def leader(self, timeout: float = 10.0) -> EtcdNode:
        """The running member that reports itself leader (waits out an election)."""
        deadline = time.monotonic() + timeout
        while True:
            leaders = [n for n in self.nodes if n.is_running and n.is_leader()]
            if len(leaders) == 1:
                return leaders[0]
            if time.monotonic() > deadline:
                raise EtcdError(f"no single leader after {timeout}s (saw {len(leaders)})")
            time.sleep(0.05)

    def kill_leader(self) -> EtcdNode:
        node = self.leader()
        node.kill()
        return node

    @property
    def is_running(self) -> bool:
        return all(node.is_running for node in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()

    def restart(self, timeout: float = 30.0) -> Self:
        """Start every member that is down (all of them after stop or kill) and wait for all."""
        for node in self.nodes:
            if not node.is_running:
                node.start()
        return self.wait_ready(timeout)

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


@atexit.register
def _kill_leftovers() -> None:
    for node in list(_live):
        node.cleanup()
