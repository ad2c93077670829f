"""Rolling budget windows as a ring of sub-buckets. Pure, no I/O.

A duration window ``W`` (``1m``, ``1h``, ``1d``...) is cut into ``BUCKETS`` sub-buckets of
width ``w = W / BUCKETS`` aligned to the Unix epoch (every process computes the same bucket
index from its clock). Tokens are recorded in the bucket of the *admission* that reserved
them (a reservation that settles later still charges the bucket it was admitted in). What
counts against the limit at ``now`` is the current bucket plus the ``BUCKETS`` before it.

The guarantee: for any instant ``t`` the admissions made in ``[t - W, t]`` sit in buckets
``index(t) - BUCKETS .. index(t)`` (``index(t - W) == index(t) - BUCKETS`` exactly), which is
the live set every one of those admissions was checked against, so the tokens admitted in
*any* interval of length ``W`` never exceed the limit -- there is no boundary at which a burst
can spend twice the limit. The price is that spend is forgotten between ``W`` and
``W + w`` after its admission (at most 1/60 of the window late), never earlier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

BUCKETS: Final = 60


@dataclass(slots=True)
class Buckets:
    """Tokens per sub-bucket over the live part of a rolling window."""

    width: float  # seconds per bucket
    count: int = BUCKETS
    spent: dict[int, int] = field(default_factory=dict)
    total: int = 0  # sum of ``spent`` over the live buckets (kept up to date by ``advance``)
    current: int = -1  # the bucket index ``advance`` last saw

    @classmethod
    def for_window(cls, seconds: float, count: int = BUCKETS) -> Buckets:
        return cls(width=seconds / count, count=count)

    def index(self, now: float) -> int:
        return int(now // self.width)

    def advance(self, now: float) -> int:
        """Forget buckets that left the window; returns the live total."""
        index = self.index(now)
        if index != self.current:
            self.current = index
            oldest = index - self.count
            for old in [i for i in self.spent if i < oldest]:
                self.total -= self.spent.pop(old)
        return self.total

    def add(self, bucket: int, amount: int) -> None:
        """Charge ``amount`` to ``bucket`` unless that bucket already left the window."""
        if amount <= 0 or (self.current >= 0 and bucket < self.current - self.count):
            return
        self.spent[bucket] = self.spent.get(bucket, 0) + amount
        self.total += amount

    def freed_after(self, need: int, now: float) -> float | None:
        """Seconds until at least ``need`` tokens have aged out (None: they never will)."""
        if need <= 0:
            return 0.0
        freed = 0
        for bucket in sorted(self.spent):
            freed += self.spent[bucket]
            if freed >= need:
                # bucket ``i`` stops counting when the current index passes ``i + count``
                return max(0.0, (bucket + self.count + 1) * self.width - now)
        return None


def retry_seconds(seconds: float) -> int:
    """Whole seconds for ``Retry-After`` (at least 1)."""
    return max(1, math.ceil(seconds - 1e-9))
