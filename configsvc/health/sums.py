"""Running sums of release x category signals over a fleet's snapshots.

``ReleaseSignals.combined`` builds a new record per addition; a fleet's window adds hundreds of
them, so ``Total`` keeps mutable sums and builds one record per key at the end. The figures a
person (and the health gate) reads from the sums are ``holdfast.signals.summary``'s, the same
the sidecar's ``/status`` shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from holdfast.keyspace.signals import ReleaseSignals
from holdfast.signals import summary

Key = tuple[str, str]  # (release, category)
Signals = dict[Key, ReleaseSignals]


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


class Total:
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


def by_release(signals: Mapping[Key, ReleaseSignals]) -> dict[str, ReleaseSignals]:
    """A window's signals with all categories of each release added together ("all")."""
    return summary.by_release(signals.values())
