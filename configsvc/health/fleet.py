"""The fleet's health as one configsvc replica sees it, fed into ``FleetWindows`` from two sides.

* Beats over HTTP (``configsvc.health.ingest``): the sidecars of the agents this replica owns
  (``configsvc.health.replicas``) send their snapshots here every interval.
* A watch on ``health/``: every sidecar's presence key, under its lease. Its deletion (the
  sidecar stopped, or died and its lease expired) retires the sidecar, as it always did; its
  value is a snapshot too, which is all there is of sidecars that publish into etcd (no replica
  known to them, or an older sidecar during a rolling upgrade).

A sidecar heard of by HTTP only, whose presence key this replica has not seen, is retired once
its beats stop for ``ORPHAN_AFTER_S``. The windows are rebuilt from the sidecars' cumulative
counters within a minute of a restart. With etcd away the view keeps the last snapshots it had
and says how old they are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from configsvc.health.shadow import shadow_view
from configsvc.health.sums import by_release
from configsvc.health.tools import by_release as tools_by_release
from configsvc.health.windows import WINDOWS, FleetWindows
from holdfast.background import BackgroundTask
from holdfast.keyspace import HealthSnapshot, Keyspace, RecordError
from holdfast.keyspace.session_spread import SessionSpread
from holdfast.logs import get_logger
from holdfast.signals.summary import window_figures
from holdfast.store import Store
from holdfast.store.mirror import MirrorUpdate, PrefixMirror

log = get_logger(__name__)

PRUNE_EVERY_S: Final = 5.0
ORPHAN_AFTER_S: Final = 30.0


@dataclass(frozen=True, slots=True)
class SidecarBeat:
    """A live sidecar's last snapshot, without its signals: who, when, on which config."""

    sidecar_id: str
    agent: str
    at: float  # when it published (its clock)
    started_at: float
    config_revision: int
    pins_cached: int
    pins_pending: int


class FleetHealth:
    def __init__(
        self, store: Store, keyspace: Keyspace, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.windows = FleetWindows()
        self.clock = clock
        self._prefix = keyspace.kind_prefix("health")
        self._mirror = PrefixMirror(store, self._prefix)
        self._mirror.subscribe(self._on_update)
        self._seen: set[str] = set()
        self._unreadable: set[str] = set()
        self._listeners: list[Callable[[HealthSnapshot], None]] = []
        self._task = BackgroundTask("fleet health prune")
        self.updated_at: float | None = None
        self.ingested = 0  # snapshots taken over HTTP
        self.ingest_seconds = 0.0  # the event loop's time taking them (BeatsApi)
        self._latest: dict[str, HealthSnapshot] = {}  # live sidecar -> its newest snapshot
        # the same, by agent: one agent's sidecars without a walk over the fleet's
        self._latest_of: dict[str, dict[str, HealthSnapshot]] = {}

    @property
    def connected(self) -> bool:
        return self._mirror.connected

    async def start(self) -> None:
        await self._mirror.start()
        self._task.start(self._prune)

    async def close(self) -> None:
        await self._task.cancel()
        await self._mirror.close()

    async def _prune(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_EVERY_S)
            self.prune()

    def prune(self) -> None:
        now = self.clock()
        present = {key.removeprefix(self._prefix) for key in self._seen}
        for sidecar_id, latest in self.windows.live():
            if sidecar_id not in present and latest < now - ORPHAN_AFTER_S:
                self._gone(sidecar_id)  # beats stopped and no presence key says alive
        self.windows.prune(now)

    def on_snapshot(self, listener: Callable[[HealthSnapshot], None]) -> None:
        """``listener`` gets every snapshot taken, over HTTP or from etcd (e.g. the MCP drift
        audit); it must not block."""
        self._listeners.append(listener)

    def ingest(self, snap: HealthSnapshot) -> None:
        """A beat from a sidecar (``POST /v1/health/beats``)."""
        self._observe(snap)
        self.ingested += 1
        self.updated_at = self.clock()

    def _observe(self, snap: HealthSnapshot) -> None:
        self.windows.observe(snap)
        for listener in self._listeners:
            listener(snap)
        held = self._latest.get(snap.sidecar_id)
        if held is None or snap.at > held.at or snap.started_at != held.started_at:
            if held is not None and held.agent != snap.agent:
                self._latest_of.get(held.agent, {}).pop(snap.sidecar_id, None)
            self._latest[snap.sidecar_id] = snap
            self._latest_of.setdefault(snap.agent, {})[snap.sidecar_id] = snap

    def _gone(self, sidecar_id: str) -> None:
        self.windows.gone(sidecar_id)
        held = self._latest.pop(sidecar_id, None)
        if held is not None:
            of_agent = self._latest_of.get(held.agent)
            if of_agent is not None:
                of_agent.pop(sidecar_id, None)
                if not of_agent:
                    del self._latest_of[held.agent]

    def latest(self, agent: str) -> list[HealthSnapshot]:
        """The newest snapshot of each live sidecar of ``agent`` this replica has."""
        return list(self._latest_of.get(agent, {}).values())

    def _on_update(self, update: MirrorUpdate) -> None:
        if update.reset:
            keys = set(update.kvs)
            for key in self._seen - keys:
                self._gone(key.removeprefix(self._prefix))
            for key in keys:
                self._read(key, update.kvs[key].value)
            self._seen = keys
        else:
            # Only what changed: with 10,000 sidecars a presence change is one key of 10,000,
            # and set arithmetic over all of them per change grew with the fleet.
            for change in update.changes:
                kv = update.kvs.get(change.key)
                if kv is None:
                    if change.key in self._seen:
                        self._seen.discard(change.key)
                        self._gone(change.key.removeprefix(self._prefix))
                else:
                    self._seen.add(change.key)
                    self._read(change.key, kv.value)
        self.updated_at = self.clock()

    def _read(self, key: str, value: bytes) -> None:
        sidecar_id = key.removeprefix(self._prefix)
        try:
            snap = HealthSnapshot.decode(value)
            if snap.sidecar_id != sidecar_id:
                # Else one key could write into another sidecar's data, and its deletion would
                # not retire what it wrote.
                raise RecordError(f"snapshot names sidecar {snap.sidecar_id!r:.80}, not its key's")
        except RecordError as exc:
            if key not in self._unreadable:  # once per key, not once per beat
                self._unreadable.add(key)
                log.warning("health_snapshot_unreadable", key=key, error=str(exc))
            return
        self._unreadable.discard(key)
        self._observe(snap)

    def beats(self, agent: str | None = None) -> list[SidecarBeat]:
        """Every live sidecar (of ``agent``) this replica knows, as its newest snapshot here
        described it: a fresh beat for the agents it owns, the presence snapshot (written when
        the sidecar's lease was granted) for the others -- ``holds`` says which."""
        return [
            SidecarBeat(
                s.sidecar_id,
                s.agent,
                s.at,
                s.started_at,
                s.config_revision,
                s.pins_cached,
                s.pins_pending,
            )
            for s in (
                self._latest.values() if agent is None else self._latest_of.get(agent, {}).values()
            )
        ]

    def status(self, agent: str, stable: str, canary: str) -> dict[str, Any]:
        now = self.clock()
        return {
            "agent": agent,
            "sidecars": self.windows.sidecars(agent),
            "etcd_connected": self.connected,
            "data_age_s": None if self.updated_at is None else round(now - self.updated_at, 3),
            "releases": releases_status(self.windows, agent, stable, canary, now),
        }


def releases_status(
    fleet: FleetWindows, agent: str, stable: str, canary: str, now: float
) -> dict[str, dict[str, Any]]:
    """Per release: each window's figures, traffic share, sessions, shadow comparisons, tools."""
    windows = {name: fleet.window(agent, s, now) for name, s in WINDOWS.items()}
    windows["since_start"] = fleet.since_start(agent)
    sessions = fleet.sessions(agent)
    tools = {name: tools_by_release(fleet.tool_window(agent, s, now))
             for name, s in WINDOWS.items()}  # fmt: skip
    tools["since_start"] = tools_by_release(fleet.tool_since_start(agent))
    shadow = {name: fleet.shadow_window(agent, s, now) for name, s in WINDOWS.items()}
    shadow["since_start"] = fleet.shadow(agent)
    releases: dict[str, dict[str, Any]] = {}
    names = {r for w in windows.values() for (r, _) in w} | {stable} | ({canary} - {""})
    names |= set(tools["since_start"]) | {s.shadow for s in shadow["since_start"]}
    recent = by_release(windows["1m"])
    total_1m = sum(s.count("requests") for s in recent.values())
    for release in sorted(names):
        role = "stable" if release == stable else "canary" if release == canary else "other"
        n_1m = recent[release].count("requests") if release in recent else 0
        spread = sessions.get(release) or SessionSpread(release=release)
        as_shadow = {name: shadow_view(w, release) for name, w in shadow.items()}
        whole = as_shadow["since_start"]
        releases[release] = {
            "role": role,
            "traffic_share": n_1m / total_1m if total_1m else None,
            "sessions": spread.sessions,
            # The live sidecars' tracked sessions: cumulative tokens and latency.
            "session_spread": spread.view(),
            "shadow_similarity": whole["similarity"],
            "shadow_samples": whole["samples"],
            "shadow_tool_agreement": whole["tool_agreement"],
            "shadow": as_shadow,
            "windows": {
                name: window_figures(by_release(w).get(release)) for name, w in windows.items()
            },
            "categories": {
                cat: window_figures(w_sig)
                for (rel, cat), w_sig in sorted(windows["5m"].items())
                if rel == release
            },
            # Tool contracts per tool: violations, calls through the sidecar, errors, latency.
            "tools": {name: w.get(release, {}) for name, w in tools.items()},
        }
    return releases
