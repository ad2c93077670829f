"""A real multi-member etcd cluster on loopback, for failover and fault tests.

Members are ``holdfast.devtools.etcd_local.EtcdNode`` processes sharing one temporary directory
and, with ``tls=True``, one throwaway CA; a cluster is a context manager like a single node.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Final, Self

from holdfast_devtools.certs import make_test_pki
from holdfast_devtools.etcd_host import HOST, EtcdError, Managed, free_ports, temp_dir
from holdfast_devtools.etcd_local import EtcdNode

# Slower than SINGLE_FLAGS so that a busy 2-core test machine does not look like a dead leader.
CLUSTER_FLAGS: Final = ("--heartbeat-interval", "100", "--election-timeout", "1000")


class EtcdCluster(Managed):
    """N members (3 by default) forming one cluster on loopback."""

    def __init__(self, size: int = 3, *, base_dir: Path | None = None, tls: bool = False) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one member")
        self._own_dir = base_dir is None
        self.dir = temp_dir("holdfast-etcd-cluster-") if base_dir is None else base_dir
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
