"""Pure fleet aggregation: sidecars' cumulative snapshots -> per-release windows.

A sidecar's counters are cumulative since it started, so the traffic of the last W seconds is
the difference between its newest snapshot and the one it published W seconds ago. A sidecar
that restarts counts from zero again: a new ``started_at`` (or a counter that went down) opens
a new *incarnation*; the old one keeps its final counts, which still belong to the windows they
fall in and to the totals "since the release started". A sidecar that died (lease expired)
keeps contributing what it served until its samples age out. A replica that has just started
watching has no history yet: a sidecar's whole cumulative count stands in for its window.

A window may also be clipped to start at a moment (a rollout's start): then a sidecar's traffic
counts from its first snapshot at or after that moment (or whole, if it started later), so
nothing served before it, such as an earlier attempt of the same rollout, is ever judged.
Freshness is kept per agent and release: a release's data version moves only when a snapshot
brings that release new requests (or new shadow comparisons).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from configsvc.health import shadow as health_shadow
from configsvc.health.shadow import Shadows, add_shadow
from configsvc.health.sums import Signals, Total, add_into
from configsvc.health.tools import Tools, ToolTotal, add_tools
from holdfast.keyspace import HealthSnapshot, ShadowStats
from holdfast.keyspace.session_spread import SessionSpread

WINDOWS: Final = {"1m": 60.0, "5m": 300.0}
KEEP_S: Final = max(WINDOWS.values()) + 30.0
MIN_SPACING_S: Final = 5.0
MAX_FOLDED_IDS: Final = 200_000


@dataclass(slots=True)
class _Sample:
    at: float
    signals: Signals
    tools: Tools = field(default_factory=dict)  # per (release, tool)
    shadow: Shadows = field(default_factory=dict)  # per (primary, shadow, epoch)


@dataclass(slots=True)
class _Incarnation:
    sidecar_id: str
    agent: str
    started_at: float
    samples: deque[_Sample] = field(default_factory=deque)
    sessions: tuple[SessionSpread, ...] = ()
    alive: bool = True

    @property
    def latest(self) -> _Sample:
        return self.samples[-1]

    def base(self, start: float, clipped: bool) -> _Sample | None:
        """The sample a window starting at ``start`` subtracts (None: count everything).

        Unclipped: the last sample at or before the start. Clipped (the start is a moment such
        as a rollout's start): the first sample at or after it, so nothing from before counts.
        """
        if clipped:
            if self.started_at >= start:
                return None
            return next((s for s in self.samples if s.at >= start), self.latest)
        base = None
        for sample in self.samples:
            if sample.at > start:
                break
            base = sample
        return base


class FleetWindows:
    def __init__(self, *, keep_s: float = KEEP_S, min_spacing_s: float = MIN_SPACING_S) -> None:
        self._live: dict[str, _Incarnation] = {}  # sidecar id -> current incarnation
        self._retired: list[_Incarnation] = []
        self._retired_by: dict[tuple[str, float], _Incarnation] = {}  # (id, started_at)
        # Incarnations folded into the totals: a beat of one of them is not a new sidecar.
        self._folded_ids: dict[tuple[str, float], None] = {}
        self._folded: dict[str, Signals] = {}  # agent -> totals of incarnations aged out
        self._folded_tools: dict[str, Tools] = {}
        self._folded_shadow: dict[str, Shadows] = {}
        self._keep = keep_s
        self._spacing = min_spacing_s
        self.version = 0  # bumps on every accepted snapshot
        self._fresh: dict[tuple[str, str], int] = {}  # (agent, release) -> new data seen
        self._marks: list[float] = []  # moments clipped windows start at (rollout starts)

    def mark(self, at: float) -> None:
        """Keep each sidecar's first sample at or after ``at``: a window clipped to start there
        then counts from it (else sparse history could put it seconds later)."""
        if at not in self._marks:
            self._marks.append(at)

    def data_version(self, agent: str, release: str) -> int:
        """Moves when a snapshot brings ``release`` new requests or shadow comparisons."""
        return self._fresh.get((agent, release), 0)

    def observe(self, snap: HealthSnapshot) -> None:
        signals = {s.key: s for s in snap.signals}
        inc = self._live.get(snap.sidecar_id)
        same = inc is not None and inc.started_at == snap.started_at
        if same and inc is not None and inc.samples and snap.at <= inc.latest.at:
            # An old or repeated beat: a sidecar's snapshots come over HTTP and from its etcd
            # presence key, not necessarily in order.
            return
        if inc is not None and (not same or _regressed(signals, inc.latest.signals)):
            self._retire(inc)  # restarted: a new incarnation follows
            inc = None
        elif inc is None:
            key = (snap.sidecar_id, snap.started_at)
            if key in self._folded_ids:
                return  # its counts are in the totals already
            late = self._retired_by.get(key)
            if late is not None:
                # The last beat of a sidecar already retired (it arrived after the presence
                # key's deletion): it updates that incarnation, which stays retired.
                if snap.at > late.latest.at and not _regressed(signals, late.latest.signals):
                    late.samples.append(
                        _Sample(
                            snap.at,
                            signals,
                            {t.key: t for t in snap.tools},
                            {health_shadow.key_of(s): s for s in snap.shadow},
                        )
                    )
                    self.version += 1
                return
        if inc is None:
            inc = _Incarnation(snap.sidecar_id, snap.agent, snap.started_at)
            self._live[snap.sidecar_id] = inc
        shadow = {health_shadow.key_of(s): s for s in snap.shadow}
        sample = _Sample(snap.at, signals, {t.key: t for t in snap.tools}, shadow)
        self._mark_fresh(snap.agent, sample, inc.latest if inc.samples else None)
        samples = inc.samples
        if (
            len(samples) >= 2
            and samples[-1].at - samples[-2].at < self._spacing
            and not any(samples[-2].at < m <= samples[-1].at for m in self._marks)
        ):
            samples[-1] = sample  # keep history sparse; the newest is always kept
        else:
            samples.append(sample)
        inc.sessions = snap.sessions
        self.version += 1

    def _mark_fresh(self, agent: str, new: _Sample, old: _Sample | None) -> None:
        before = _per_release(old) if old is not None else {}
        for release, n in _per_release(new).items():
            if n != before.get(release, (0, 0)):
                key = (agent, release)
                self._fresh[key] = self._fresh.get(key, 0) + 1

    def live(self) -> list[tuple[str, float]]:
        """Every live sidecar and the time of its newest snapshot."""
        return [(sid, inc.latest.at) for sid, inc in self._live.items() if inc.samples]

    def gone(self, sidecar_id: str) -> None:
        """The sidecar's key went away (lease expired or revoked)."""
        inc = self._live.pop(sidecar_id, None)
        if inc is not None:
            self._retire(inc)
            self.version += 1

    def _retire(self, inc: _Incarnation) -> None:
        inc.alive = False
        self._retired.append(inc)
        self._retired_by[(inc.sidecar_id, inc.started_at)] = inc

    def prune(self, now: float) -> None:
        horizon = now - self._keep
        kept: list[_Incarnation] = []
        for inc in self._retired:
            if inc.latest.at < horizon:
                add_into(self._folded.setdefault(inc.agent, {}), inc.latest.signals.values())
                add_tools(self._folded_tools.setdefault(inc.agent, {}), inc.latest.tools.values())
                add_shadow(
                    self._folded_shadow.setdefault(inc.agent, {}), inc.latest.shadow.values()
                )
                key = (inc.sidecar_id, inc.started_at)
                self._retired_by.pop(key, None)
                self._folded_ids[key] = None
                while len(self._folded_ids) > MAX_FOLDED_IDS:
                    del self._folded_ids[next(iter(self._folded_ids))]
            else:
                kept.append(inc)
        self._retired = kept
        self._marks = [m for m in self._marks if m >= horizon]
        for inc in self._live.values():
            while len(inc.samples) > 2 and inc.samples[1].at <= horizon:
                inc.samples.popleft()

    def _incarnations(self, agent: str) -> Iterable[_Incarnation]:
        for inc in (*self._live.values(), *self._retired):
            if inc.agent == agent and inc.samples:
                yield inc

    def _spans(
        self, agent: str, seconds: float, now: float, since: float | None
    ) -> Iterable[tuple[_Sample, _Sample | None]]:
        """(newest sample, base) of every incarnation with traffic in the window."""
        start = now - seconds
        clipped = since is not None and since > start
        if clipped:
            start = since  # type: ignore[assignment]  # not None when clipped
        for inc in self._incarnations(agent):
            latest = inc.latest
            if latest.at < start:
                continue
            # Unclipped, no sample from before the window (this replica has just started
            # watching): the whole count stands in, an overcount until a window of history
            # exists, rather than being blind for a window's length.
            base = inc.base(start, clipped)
            if base is not latest:  # the newest sample as the base: nothing since
                yield latest, base

    def window(self, agent: str, seconds: float, now: float, since: float | None = None) -> Signals:
        """Traffic of the last ``seconds`` (not before ``since``), summed over the fleet, per
        (release, category)."""
        total = Total()
        for latest, base in self._spans(agent, seconds, now, since):
            total.add(latest.signals.values())
            if base is not None:
                total.add(base.signals.values(), -1)
        return total.result()

    def since_start(self, agent: str) -> Signals:
        """Everything every incarnation ever reported (cumulative counters need no baseline)."""
        total = Total()
        total.add(self._folded.get(agent, {}).values())
        for inc in self._incarnations(agent):
            total.add(inc.latest.signals.values())
        return total.result()

    def tool_window(self, agent: str, seconds: float, now: float) -> Tools:
        """Tool signals of the last ``seconds`` per (release, tool), as ``window`` does."""
        total = ToolTotal()
        for latest, base in self._spans(agent, seconds, now, None):
            total.add_difference(latest.tools, base.tools if base else None)
        return total.result()

    def tool_since_start(self, agent: str) -> Tools:
        total = ToolTotal()
        for folded in self._folded_tools.get(agent, {}).values():
            total.add(folded)
        for inc in self._incarnations(agent):
            for signals in inc.latest.tools.values():
                total.add(signals)
        return total.result()

    def shadow_window(
        self, agent: str, seconds: float, now: float, since: float | None = None
    ) -> list[ShadowStats]:
        """Shadow comparisons of the last ``seconds`` (not before ``since``)."""
        total: Shadows = {}
        for latest, base in self._spans(agent, seconds, now, since):
            add_shadow(
                total, health_shadow.difference(latest.shadow, base.shadow if base else None)
            )
        return list(total.values())

    def shadow(self, agent: str) -> list[ShadowStats]:
        """Every comparison ever reported, per (primary, shadow, epoch)."""
        total = dict(self._folded_shadow.get(agent, {}))
        for inc in self._incarnations(agent):
            add_shadow(total, inc.latest.shadow.values())
        return list(total.values())

    def sessions(self, agent: str) -> dict[str, SessionSpread]:
        merged: dict[str, SessionSpread] = {}
        for inc in self._live.values():
            if inc.agent == agent:
                for s in inc.sessions:
                    merged[s.release] = merged[s.release].merged(s) if s.release in merged else s
        return merged

    def sidecars(self, agent: str) -> int:
        return sum(1 for inc in self._live.values() if inc.agent == agent)


def _per_release(sample: _Sample) -> dict[str, tuple[int, int]]:
    """Per release: (requests served, shadow comparisons made as the shadow)."""
    out: dict[str, tuple[int, int]] = {}
    for (release, _), s in sample.signals.items():
        n, m = out.get(release, (0, 0))
        out[release] = (n + s.count("requests"), m)
    for stats in sample.shadow.values():
        n, m = out.get(stats.shadow, (0, 0))
        out[stats.shadow] = (n, m + stats.samples)
    return out


def _regressed(new: Signals, old: Signals) -> bool:
    """A key gone or a request count down: counters restarted. (Every exchange counts one
    request, so comparing that counter alone is enough and keeps ingestion cheap.)"""
    for key, s in old.items():
        fresh = new.get(key)
        if fresh is None or fresh.count("requests") < s.count("requests"):
            return True
    return False
