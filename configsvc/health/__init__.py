"""The fleet's health: sidecars' beats taken over HTTP (``BeatsApi``) by the replicas that own
their agents (``ReplicaSet``), aggregated per release and category (``FleetHealth``), the status
API and the console's view (asking the owners: ``Peers``, ``OwnerHealth``), and the health gate
of rollouts (``PolicyGate``, judging from local windows or from the owner's recorded evaluation,
``GateRecords``/``GateRecorder``). The per-release figures are ``holdfast.signals.summary``'s,
the same the sidecar's ``/status`` shows."""

from configsvc.health.api import StatusApi
from configsvc.health.evaluations import GateRecorder, GateRecords
from configsvc.health.figures import AgentHealth, release_figures, shadow_similarity
from configsvc.health.fleet import FleetHealth, SidecarBeat, releases_status
from configsvc.health.gate import PolicyGate
from configsvc.health.ingest import BeatsApi
from configsvc.health.latest import OwnerBeats
from configsvc.health.owners import OwnerHealth
from configsvc.health.peers import Peers
from configsvc.health.replicas import ReplicaSet

__all__ = [
    "AgentHealth",
    "BeatsApi",
    "FleetHealth",
    "GateRecorder",
    "GateRecords",
    "OwnerBeats",
    "OwnerHealth",
    "Peers",
    "PolicyGate",
    "ReplicaSet",
    "SidecarBeat",
    "StatusApi",
    "release_figures",
    "releases_status",
    "shadow_similarity",
]
