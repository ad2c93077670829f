"""Pure accumulation of functional-health signals per release x category, and per session.

``SignalBook.record`` is called once per finished exchange (no I/O, no parsing); the health
publisher reads ``signals()`` and ``spreads()`` at every beat. Categories are bounded per
release (further ones count as "other") and sessions are an LRU of bounded size, so a sidecar's
memory and snapshot stay small whatever its callers send.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from holdfast.keyspace.categories import CATEGORY_RE, MAX_CATEGORIES
from holdfast.keyspace.session_spread import SessionSpread
from holdfast.keyspace.signals import (
    HISTOGRAMS,
    LATENCY_BOUNDS_MS,
    LENGTH_BOUNDS_TOKENS,
    MAX_TOOLS,
    ReleaseSignals,
    bucket_index,
)
from holdfast.signals.summary import release_status
from sidecar.signals.categories import CategoryCap, category_of
from sidecar.signals.spread import SpreadTally

__all__ = ["CATEGORY_RE", "Observation", "SignalBook", "category_of", "error_class", "summary"]
DEFAULT_MAX_CATEGORIES: Final = MAX_CATEGORIES
DEFAULT_MAX_SESSIONS: Final = 10_000
# Exchange outcome codes -> error class (see holdfast.keyspace.signals.ERROR_CLASSES).
_CLASS_OF: Final = {
    "upstream_4xx": "upstream_4xx",
    "upstream_5xx": "upstream_5xx",
    "upstream_timeout": "timeout",
    "upstream_unreachable": "unreachable",
    "client_disconnected": "disconnected",
}


def error_class(code: str) -> str | None:
    """None for a success; a provider-side class, "disconnected", or "refused" (Holdfast said no:
    a budget, a contract, a missing key -- anything else)."""
    if code == "ok":
        return None
    return _CLASS_OF.get(code, "refused")


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation:
    """One finished exchange, as the signals filter saw it."""

    release: str
    category: str  # already capped (SignalBook.category)
    session: str | None
    code: str  # outcome code
    operation: str = "chat"
    reason: str = ""  # the refusing error's code, when refused
    latency_s: float
    ttft_s: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    usage_known: bool = False
    answered: bool = False  # a whole answer was seen (shape signals apply)
    empty: bool = False
    refusal: bool = False
    tools: tuple[str, ...] = ()
    violations: int = 0
    cost_usd: float = 0.0


class _Cell:
    __slots__ = ("counts", "hists", "sums", "tools")

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.sums: dict[str, float] = {}
        self.hists: dict[str, list[int]] = {n: [0] * (len(b) + 1) for n, b in HISTOGRAMS.items()}
        self.tools: dict[str, int] = {}

    def inc(self, name: str, by: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + by


@dataclass(slots=True)
class _Session:
    release: str
    tokens: int
    latency_ms: float


class SignalBook:
    def __init__(
        self,
        *,
        max_categories: int = DEFAULT_MAX_CATEGORIES,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
    ) -> None:
        self._cells: dict[tuple[str, str], _Cell] = {}
        # Shared with the Prometheus series (through the signals filter): one cap for both.
        self.cap = CategoryCap(max_categories)
        self._max_sessions = max_sessions
        self._sessions: OrderedDict[str, _Session] = OrderedDict()  # most recently used last
        self._spread = SpreadTally()  # what they add up to, per release

    def category(self, release: str, category: str) -> str:
        """``category`` itself, or ``other`` once the release has its fill of categories."""
        return self.cap.admit(release, category)

    def _cell(self, release: str, category: str) -> _Cell:
        cell = self._cells.get((release, category))
        if cell is not None:
            return cell
        category = self.cap.admit(release, category)
        cell = self._cells.get((release, category))
        if cell is None:
            cell = self._cells[(release, category)] = _Cell()
        return cell

    def record(self, obs: Observation) -> None:
        cell = self._cell(obs.release, obs.category)
        cell.inc("requests")
        klass = error_class(obs.code)
        if klass is not None:
            cell.inc(f"error_{klass}")
            if klass == "refused" and "budget" in obs.reason:
                cell.inc("budget_rejections")
        latency_ms = obs.latency_s * 1000
        cell.sums["latency_ms_sum"] = cell.sums.get("latency_ms_sum", 0.0) + latency_ms
        cell.hists["latency_ms"][bucket_index(LATENCY_BOUNDS_MS, latency_ms)] += 1
        if obs.ttft_s is not None:
            cell.hists["ttft_ms"][bucket_index(LATENCY_BOUNDS_MS, obs.ttft_s * 1000)] += 1
        if obs.violations:
            cell.inc("violations", obs.violations)
        if obs.answered:
            cell.inc("usage_requests")
            cell.inc("tokens_in", obs.tokens_in)
            cell.inc("tokens_out", obs.tokens_out)
            if not obs.usage_known:
                cell.inc("estimated")
            cell.hists["length_tokens"][bucket_index(LENGTH_BOUNDS_TOKENS, obs.tokens_out)] += 1
            if obs.empty:
                cell.inc("empty")
            if obs.refusal:
                cell.inc("refusals")
            if obs.tools:
                cell.inc("tool_answers")
            for tool in obs.tools:
                if tool in cell.tools or len(cell.tools) < MAX_TOOLS:
                    cell.tools[tool] = cell.tools.get(tool, 0) + 1
            if obs.cost_usd:
                cell.sums["cost_usd"] = cell.sums.get("cost_usd", 0.0) + obs.cost_usd
        if obs.session is not None:
            self._session(obs.session, obs.release, obs.tokens_in + obs.tokens_out, latency_ms)

    def _session(self, session: str, release: str, tokens: int, latency_ms: float) -> None:
        entry = self._sessions.get(session)
        if entry is None:
            self._sessions[session] = _Session(release, tokens, latency_ms)
            self._spread.add(release, tokens, latency_ms)
            if len(self._sessions) > self._max_sessions:
                _, dropped = self._sessions.popitem(last=False)
                self._spread.remove(dropped.release, dropped.tokens, dropped.latency_ms)
            return
        self._sessions.move_to_end(session)
        self._spread.remove(entry.release, entry.tokens, entry.latency_ms)
        entry.release = release
        entry.tokens += tokens
        entry.latency_ms += latency_ms
        self._spread.add(entry.release, entry.tokens, entry.latency_ms)

    def signals(self) -> tuple[ReleaseSignals, ...]:
        return tuple(
            ReleaseSignals(
                release=release,
                category=category,
                counts={k: v for k, v in cell.counts.items() if v},
                sums={k: v for k, v in cell.sums.items() if v},
                hists={n: tuple(b) for n, b in cell.hists.items() if any(b)},
                tools=dict(cell.tools),
            )
            for (release, category), cell in sorted(self._cells.items())
        )

    def spreads(self) -> tuple[SessionSpread, ...]:
        return self._spread.spreads()

    @property
    def sessions(self) -> int:
        return len(self._sessions)


def summary(
    signals: tuple[ReleaseSignals, ...], spreads: tuple[SessionSpread, ...] = ()
) -> dict[str, Mapping[str, object]]:
    """Per release, all categories together: what /status shows a person."""
    return release_status(signals, spreads)
