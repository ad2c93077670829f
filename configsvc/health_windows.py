"""Pure fleet aggregation: sidecars' cumulative snapshots -> per-release windows.

A sidecar's counters are cumulative since it started, so the traffic of the last W seconds is
the difference between its newest snapshot and the one it published W seconds ago. A sidecar
that restarts counts from zero again: a new ``started_at`` (or a counter that went down) opens
a new *incarnation*; the old one keeps its final counts, which still belong to the windows they
fall in and to the totals "since the release started". A sidecar that died (lease expired)
keeps contributing what it served until its samples age out. A replica that has just started
watching has no history yet: a sidecar's whole cumulative count stands in for its window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from configsvc.tool_health import Tools, add_tools, difference
from holdfast.keyspace import HealthSnapshot, ShadowStats
from holdfast.keyspace.signals import (
    ERROR_CLASSES,
    LATENCY_BOUNDS_MS,
    ReleaseSignals,
    SessionSpread,
    quantile,
)

WINDOWS: Final = {"1m": 60.0, "5m": 300.0}
KEEP_S: Final = max(WINDOWS.values()) + 30.0
MIN_SPACING_S: Final = 5.0
# Error classes that are the release's (provider) failures; refusals and disconnects are not.
FAILURE_CLASSES: Final = ("upstream_4xx", "upstream_5xx", "timeout", "unreachable")
Key = tuple[str, str]  # (release, category)
Signals = dict[Key, ReleaseSignals]


@dataclass(slots=True)
class _Sample:
    at: float
    signals: Signals
    tools: Tools = field(default_factory=dict)  # per (release, tool)


@dataclass(slots=True)
class _Incarnation:
    sidecar_id: str
    agent: str
    started_at: float
    samples: deque[_Sample] = field(default_factory=deque)
    shadow: tuple[ShadowStats, ...] = ()
    sessions: tuple[SessionSpread, ...] = ()
    alive: bool = True

    @property
    def latest(self) -> _Sample:
        return self.samples[-1]


class _Sum:
    """A mutable running sum of signals of one key: sparse adds, one record at the end."""

    __slots__ = ("category", "counts", "hists", "release", "sums", "tools")

    def __init__(self, release: str, category: str) -> None:
        self.release, self.category = release, category
        self.counts: dict[str, int] = {}
        self.sums: dict[str, float] = {}
        self.hists: dict[str, list[int]] = {}
        self.tools: dict[str, int] = {}

    def add(self, s: ReleaseSignals, sign: int) -> None:
        counts, sums, tools = self.counts, self.sums, self.tools
        for name, n in s.counts.items():
            counts[name] = counts.get(name, 0) + sign * n
        for name, x in s.sums.items():
            sums[name] = sums.get(name, 0.0) + sign * x
        for name, buckets in s.hists.items():
            have = self.hists.get(name)
            if have is None:
                self.hists[name] = [sign * b for b in buckets]
            else:
                for i, b in enumerate(buckets):
                    have[i] += sign * b
        for name, n in s.tools.items():
            tools[name] = tools.get(name, 0) + sign * n

    def record(self) -> ReleaseSignals:
        return ReleaseSignals(
            release=self.release,
            category=self.category,
            counts={k: v for k, v in self.counts.items() if v},
            sums={k: v for k, v in self.sums.items() if v},
            hists={k: tuple(v) for k, v in self.hists.items() if any(v)},
            tools={k: v for k, v in self.tools.items() if v},
        )


class _Total:
    def __init__(self) -> None:
        self.sums: dict[Key, _Sum] = {}

    def add(self, signals: Iterable[ReleaseSignals], sign: int = 1) -> None:
        for s in signals:
            acc = self.sums.get(s.key)
            if acc is None:
                acc = self.sums[s.key] = _Sum(s.release, s.category)
            acc.add(s, sign)

    def result(self) -> Signals:
        return {key: acc.record() for key, acc in self.sums.items()}


def add_into(total: Signals, signals: Iterable[ReleaseSignals], sign: int = 1) -> None:
    for s in signals:
        have = total.get(s.key)
        if have is None:
            total[s.key] = s if sign == 1 else ReleaseSignals(release=s.release).combined(s, -1)
        else:
            total[s.key] = have.combined(s, sign)


class FleetWindows:
    def __init__(self, *, keep_s: float = KEEP_S, min_spacing_s: float = MIN_SPACING_S) -> None:
        self._live: dict[str, _Incarnation] = {}  # sidecar id -> current incarnation
        self._retired: list[_Incarnation] = []
        self._folded: dict[str, Signals] = {}  # agent -> totals of incarnations aged out
        self._folded_tools: dict[str, Tools] = {}
        self._keep = keep_s
        self._spacing = min_spacing_s
        self.version = 0  # bumps on every accepted snapshot: "is there new data?"

    def observe(self, snap: HealthSnapshot) -> None:
        signals = {s.key: s for s in snap.signals}
        inc = self._live.get(snap.sidecar_id)
        if inc is not None and (
            inc.started_at != snap.started_at or _regressed(signals, inc.latest.signals)
        ):
            self._retire(inc)
            inc = None
        if inc is None:
            inc = _Incarnation(snap.sidecar_id, snap.agent, snap.started_at)
            self._live[snap.sidecar_id] = inc
        elif inc.samples and snap.at <= inc.latest.at:
            return  # an old or repeated beat
        sample = _Sample(snap.at, signals, {t.key: t for t in snap.tools})
        samples = inc.samples
        if len(samples) >= 2 and samples[-1].at - samples[-2].at < self._spacing:
            samples[-1] = sample  # keep history sparse; the newest is always kept
        else:
            samples.append(sample)
        inc.shadow, inc.sessions = snap.shadow, snap.sessions
        self.version += 1

    def gone(self, sidecar_id: str) -> None:
        """The sidecar's key went away (lease expired or revoked)."""
        inc = self._live.pop(sidecar_id, None)
        if inc is not None:
            self._retire(inc)
            self.version += 1

    def _retire(self, inc: _Incarnation) -> None:
        inc.alive = False
        self._retired.append(inc)

    def prune(self, now: float) -> None:
        horizon = now - self._keep
        kept: list[_Incarnation] = []
        for inc in self._retired:
            if inc.latest.at < horizon:
                add_into(self._folded.setdefault(inc.agent, {}), inc.latest.signals.values())
                add_tools(self._folded_tools.setdefault(inc.agent, {}), inc.latest.tools.values())
            else:
                kept.append(inc)
        self._retired = kept
        for inc in self._live.values():
            while len(inc.samples) > 2 and inc.samples[1].at <= horizon:
                inc.samples.popleft()

    def _incarnations(self, agent: str) -> Iterable[_Incarnation]:
        for inc in (*self._live.values(), *self._retired):
            if inc.agent == agent and inc.samples:
                yield inc

    def window(self, agent: str, seconds: float, now: float) -> Signals:
        """Traffic of the last ``seconds``, summed over the fleet, per (release, category)."""
        start = now - seconds
        total = _Total()
        for inc in self._incarnations(agent):
            latest = inc.latest
            if latest.at < start:
                continue
            base = None
            for sample in inc.samples:
                if sample.at <= start:
                    base = sample
                else:
                    break
            # No sample from before the window (this replica has just started watching): the
            # whole cumulative count stands in, an overcount until a window of history exists,
            # rather than being blind for a window's length.
            total.add(latest.signals.values())
            if base is not None and base is not latest:
                total.add(base.signals.values(), -1)
        return total.result()

    def since_start(self, agent: str) -> Signals:
        """Everything every incarnation ever reported (cumulative counters need no baseline)."""
        total = _Total()
        total.add(self._folded.get(agent, {}).values())
        for inc in self._incarnations(agent):
            total.add(inc.latest.signals.values())
        return total.result()

    def tool_window(self, agent: str, seconds: float, now: float) -> Tools:
        """Tool signals of the last ``seconds`` per (release, tool), as ``window`` does."""
        start = now - seconds
        total: Tools = {}
        for inc in self._incarnations(agent):
            if inc.latest.at < start:
                continue
            base = None
            for sample in inc.samples:
                if sample.at > start:
                    break
                base = sample
            add_tools(total, difference(inc.latest.tools, base.tools if base else None))
        return total

    def tool_since_start(self, agent: str) -> Tools:
        total = dict(self._folded_tools.get(agent, {}))
        for inc in self._incarnations(agent):
            add_tools(total, inc.latest.tools.values())
        return total

    def shadow(self, agent: str) -> list[ShadowStats]:
        merged: dict[tuple[str, str, float], ShadowStats] = {}
        for inc in self._live.values():
            if inc.agent != agent:
                continue
            for s in inc.shadow:
                key = (s.primary, s.shadow, s.epoch)
                merged[key] = merged[key].merged(s) if key in merged else s
        return list(merged.values())

    def sessions(self, agent: str) -> dict[str, SessionSpread]:
        merged: dict[str, SessionSpread] = {}
        for inc in self._live.values():
            if inc.agent == agent:
                for s in inc.sessions:
                    merged[s.release] = merged[s.release].merged(s) if s.release in merged else s
        return merged

    def sidecars(self, agent: str) -> int:
        return sum(1 for inc in self._live.values() if inc.agent == agent)


def _regressed(new: Signals, old: Signals) -> bool:
    """A key gone or a request count down: counters restarted. (Every exchange counts one
    request, so comparing that counter alone is enough and keeps ingestion cheap.)"""
    for key, s in old.items():
        fresh = new.get(key)
        if fresh is None or fresh.count("requests") < s.count("requests"):
            return True
    return False


def by_release(signals: Mapping[Key, ReleaseSignals]) -> dict[str, ReleaseSignals]:
    """All categories of each release added together (category "all")."""
    out: dict[str, ReleaseSignals] = {}
    for (release, _), s in signals.items():
        base = out.get(release) or ReleaseSignals(release=release, category="all")
        out[release] = base.combined(s)
    return out


def view(s: ReleaseSignals | None) -> dict[str, Any]:
    """The figures a person (and a gate) reads from one release's signals."""
    s = s or ReleaseSignals(release="none")
    n = s.count("requests")
    answered = s.count("usage_requests")
    failures = sum(s.count(f"error_{c}") for c in FAILURE_CLASSES)
    hist = s.hist("latency_ms")
    return {
        "requests": n,
        "failures": failures,
        "error_rate": failures / n if n else None,
        "errors": {c: s.count(f"error_{c}") for c in ERROR_CLASSES if s.count(f"error_{c}")},
        "p50_ms": quantile(LATENCY_BOUNDS_MS, hist, 0.5),
        "p95_ms": quantile(LATENCY_BOUNDS_MS, hist, 0.95),
        "answers": answered,
        "tokens_per_answer": s.count("tokens_out") / answered if answered else None,
        "tokens_per_request": (s.count("tokens_in") + s.count("tokens_out")) / answered
        if answered
        else None,
        "cost_per_request": s.total("cost_usd") / answered if answered else None,
        "violations": s.count("violations"),
        "violation_rate": s.count("violations") / n if n else None,
        "refusal_rate": s.count("refusals") / answered if answered else None,
        "empty_rate": s.count("empty") / answered if answered else None,
        "estimated_answers": s.count("estimated"),
        "budget_rejections": s.count("budget_rejections"),
        "tool_calls": dict(s.tools),
    }
