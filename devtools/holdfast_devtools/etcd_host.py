"""What a local etcd needs from this host: the binary, free loopback ports and a scratch dir.

Also the start-wait-clean-up lifecycle that single nodes (``holdfast.devtools.etcd_local``) and
clusters (``holdfast.devtools.etcd_cluster``) share as context managers.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from abc import ABC, abstractmethod
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Final, Self

ETCD_BIN_ENV: Final = "HOLDFAST_ETCD_BIN"
PORT_RANGE_ENV: Final = "HOLDFAST_PORT_RANGE"  # "lo-hi": where etcd's ports come from
HOST: Final = "127.0.0.1"


class EtcdError(RuntimeError):
    """etcd is missing, exited early or never became ready; the message has its log tail."""


def temp_dir(prefix: str) -> Path:
    """A new private directory for etcd data and logs, on tmpfs when there is one."""
    # tmpfs makes etcd's fsyncs free, which keeps a loaded test machine from missing heartbeats.
    shm = Path("/dev/shm")  # noqa: S108 - a private mkdtemp below it
    root = os.environ.get("HOLDFAST_ETCD_TMP") or (str(shm) if os.access(shm, os.W_OK) else None)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


def free_port(host: str = HOST) -> int:
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = HOST) -> list[int]:
    """Distinct free ports: all sockets stay bound until every port is chosen.

    etcd takes its ports on the command line, so they are chosen here and bound by etcd a
    moment later. Another process asking the kernel for any free port in that moment could get
    the same one; with ``$HOLDFAST_PORT_RANGE`` set (the test suite gives each of its parallel
    workers its own range, below the kernel's ephemeral range) nobody else draws from it.
    """
    configured = os.environ.get(PORT_RANGE_ENV)
    if configured:
        return _ports_in_range(count, host, configured)
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in socks]


_cursor: dict[str, int] = {}  # range -> the next port to try: a released port rests a while


def _ports_in_range(count: int, host: str, spec: str) -> list[int]:
    try:
        low, high = (int(part) for part in spec.split("-"))
    except ValueError as exc:
        raise EtcdError(f"{PORT_RANGE_ENV}={spec!r}: expected LOW-HIGH") from exc
    size = high - low + 1
    if not 1024 <= low <= high <= 65535 or size < count:
        raise EtcdError(f"{PORT_RANGE_ENV}={spec!r}: not a range of {count}+ ports")
    ports: list[int] = []
    with ExitStack() as stack:
        for _ in range(size):
            port = low + _cursor.get(spec, 0) % size
            _cursor[spec] = _cursor.get(spec, 0) + 1
            sock = stack.enter_context(socket.socket())
            try:
                sock.bind((host, port))
            except OSError:
                continue
            ports.append(port)
            if len(ports) == count:
                return ports
    raise EtcdError(f"{PORT_RANGE_ENV}={spec!r}: fewer than {count} free ports")


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


class Managed(ABC):
    """Context-manager plumbing shared by nodes and clusters: start and wait, always clean up."""

    @abstractmethod
    def start(self) -> Self:
        """Launch the process(es); returns at once."""

    @abstractmethod
    def wait_ready(self, timeout: float = 30.0) -> Self:
        """Block until etcd answers, or raise EtcdError after ``timeout`` seconds."""

    @abstractmethod
    def cleanup(self) -> None:
        """Stop every process and remove the data directories."""

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
