"""The fleet's health: sidecars' beats taken over HTTP (``BeatsApi``) by the replicas that own
their agents (``ReplicaSet``), aggregated per release and category (``FleetHealth``), the status
API (asking the owners, ``Peers``), and the health gate of rollouts (``PolicyGate``, judging from
local windows or from the owner's recorded evaluation, ``GateRecords``/``GateRecorder``). The
per-release figures are ``holdfast.signals.summary``'s, the same the sidecar's ``/status``
shows."""

from configsvc.health.api import StatusApi
from configsvc.health.evaluations import GateRecorder, GateRecords
from configsvc.health.fleet import FleetHealth
from configsvc.health.gate import PolicyGate
from configsvc.health.ingest import BeatsApi
from configsvc.health.latest import OwnerBeats
from configsvc.health.peers import Peers
from configsvc.health.replicas import ReplicaSet

__all__ = [
    "BeatsApi",
    "FleetHealth",
    "GateRecorder",
    "GateRecords",
    "OwnerBeats",
    "Peers",
    "PolicyGate",
    "ReplicaSet",
    "StatusApi",
]
