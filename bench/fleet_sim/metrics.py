"""What the control plane spent, read where it is kept: etcd's own Prometheus metrics (every
member) and the configsvc replicas' CPU time (``/proc``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import psutil

from holdfast_devtools.etcd_cluster import EtcdCluster
from holdfast_devtools.procs import ManagedProcess

SENT = 'etcd_network_client_grpc_sent_bytes_total{type="grpc"}'
RECEIVED = 'etcd_network_client_grpc_received_bytes_total{type="grpc"}'
WRITES = ("etcd_mvcc_put_total", "etcd_mvcc_delete_total", "etcd_mvcc_txn_total")
PROPOSALS = "etcd_server_proposals_committed_total"
DB_SIZE = "etcd_mvcc_db_total_size_in_bytes"
DB_IN_USE = "etcd_mvcc_db_total_size_in_use_in_bytes"
KEYS = "etcd_debugging_mvcc_keys_total"
WATCHERS = "etcd_debugging_mvcc_watcher_total"
STREAMS = "etcd_debugging_mvcc_watch_stream_total"


def _total(metrics: dict[str, float], name: str) -> float:
    """A counter summed over its label sets (etcd labels some by type)."""
    if name in metrics:
        return metrics[name]
    prefix = name.split("{")[0]
    return sum(v for k, v in metrics.items() if k == prefix or k.startswith(prefix + "{"))


@dataclass(frozen=True, slots=True)
class Reading:
    at: float
    sent: float  # bytes etcd sent to clients, all members
    received: float
    writes: float  # puts, deletes, txns applied (one member: every member applies each)
    proposals: float  # raft proposals committed (writes, lease grants, revokes, expiries)
    db_size: float
    db_in_use: float
    keys: float
    watchers: float  # on the member with the most (the one the fleet watches through)
    streams: float
    configsvc_cpu: tuple[float, ...]  # seconds of CPU each replica used so far


def read(cluster: EtcdCluster, replicas: Sequence[ManagedProcess]) -> Reading:
    members = [n.metrics() for n in cluster.nodes if n.is_running]
    first = members[0] if members else {}
    cpu = []
    for proc in replicas:
        try:
            times = psutil.Process(proc.proc.pid).cpu_times() if proc.proc else None
        except psutil.Error:
            times = None
        cpu.append(times.user + times.system if times else 0.0)
    return Reading(
        at=time.monotonic(),
        sent=sum(_total(m, SENT) for m in members),
        received=sum(_total(m, RECEIVED) for m in members),
        writes=sum(_total(first, w) for w in WRITES),
        proposals=_total(first, PROPOSALS),
        db_size=max((m.get(DB_SIZE, 0.0) for m in members), default=0.0),
        db_in_use=max((m.get(DB_IN_USE, 0.0) for m in members), default=0.0),
        keys=first.get(KEYS, 0.0),
        watchers=max((m.get(WATCHERS, 0.0) for m in members), default=0.0),
        streams=max((m.get(STREAMS, 0.0) for m in members), default=0.0),
        configsvc_cpu=tuple(cpu),
    )


@dataclass(frozen=True, slots=True)
class Window:
    seconds: float
    sent_per_s: float
    received_per_s: float
    writes_per_s: float
    proposals_per_s: float
    db_growth_per_h: float
    db_in_use_growth_per_h: float
    configsvc_cpu: tuple[float, ...]  # cores busy, per replica

    @classmethod
    def between(cls, a: Reading, b: Reading) -> Window:
        s = max(1e-9, b.at - a.at)
        return cls(
            seconds=s,
            sent_per_s=(b.sent - a.sent) / s,
            received_per_s=(b.received - a.received) / s,
            writes_per_s=(b.writes - a.writes) / s,
            proposals_per_s=(b.proposals - a.proposals) / s,
            db_growth_per_h=(b.db_size - a.db_size) / s * 3600,
            db_in_use_growth_per_h=(b.db_in_use - a.db_in_use) / s * 3600,
            configsvc_cpu=tuple(
                (y - x) / s for x, y in zip(a.configsvc_cpu, b.configsvc_cpu, strict=True)
            ),
        )
