"""Where the sidecar's watch delivers: one mirror update split between its consumers.

Pins and state owners (``responses/<agent>/``) go to their tables and members (configsvc's
replicas) to the health beats only: they are not configuration, and must not be saved in (or
trigger saves of) the config snapshot; every other key goes to the config state.
``sidecar.app`` subscribes one ``WatchFeed`` to its mirror, and the fleet simulator
(``bench/fleet_sim``) does the same, so both split updates alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from holdfast.store import Change, KeyValue
from holdfast.store.mirror import MirrorUpdate
from sidecar.config import ConfigState


class SideTable(Protocol):
    """A consumer of one key range of the watch besides the configuration."""

    def accepts(self, key: str) -> bool: ...
    def apply_reset(self, kvs: Mapping[str, KeyValue]) -> None: ...
    def apply_changes(self, changes: Sequence[Change]) -> None: ...


class WatchFeed:
    def __init__(self, config: ConfigState, *tables: SideTable) -> None:
        self.config = config
        self.tables = tables

    def __call__(self, update: MirrorUpdate) -> None:
        if update.reset:
            for table in self.tables:
                table.apply_reset(update.kvs)
            self.config.apply_reset(update.revision, update.kvs, "etcd")
            return
        rest = list(update.changes)
        for table in self.tables:
            mine = [c for c in rest if table.accepts(c.key)]
            if mine:
                table.apply_changes(mine)
                rest = [c for c in rest if not table.accepts(c.key)]
        if rest:
            self.config.apply_changes(update.revision, rest)
