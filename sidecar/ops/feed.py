"""Where the sidecar's watch delivers: one mirror update split between its consumers.

Pins go to the pin table and members (configsvc's replicas) to the health beats only: they are
not configuration, and must not be saved in (or trigger saves of) the config snapshot; every
other key goes to the config state. ``sidecar.app`` subscribes one ``WatchFeed`` to its mirror,
and the fleet simulator (``bench/fleet_sim``) does the same, so both split updates alike.
"""

from __future__ import annotations

from holdfast.store.mirror import MirrorUpdate
from sidecar.config import ConfigState
from sidecar.ops.beats import Replicas
from sidecar.pins import PinTable


class WatchFeed:
    def __init__(self, config: ConfigState, pins: PinTable, replicas: Replicas) -> None:
        self.config = config
        self.pins = pins
        self.replicas = replicas

    def __call__(self, update: MirrorUpdate) -> None:
        if update.reset:
            self.pins.apply_reset(update.kvs)
            self.replicas.apply_reset(update.kvs)
            self.config.apply_reset(update.revision, update.kvs, "etcd")
            return
        pins = [c for c in update.changes if self.pins.accepts(c.key)]
        members = [c for c in update.changes if self.replicas.accepts(c.key)]
        if pins:
            self.pins.apply_changes(pins)
        if members:
            self.replicas.apply_changes(members)
        if len(pins) + len(members) != len(update.changes):
            rest = [
                c
                for c in update.changes
                if not self.pins.accepts(c.key) and not self.replicas.accepts(c.key)
            ]
            self.config.apply_changes(update.revision, rest)
