"""Deterministic sticky assignment: a key hashes to one of 100,000 buckets, forever.

The hash is MurmurHash3 x86 32-bit (``mmh3.hash``, seed 0, unsigned) of the UTF-8 bytes of
``"<namespace>\\x00<agent>\\x00<key>"``, modulo 100,000. A percentage P selects the buckets
below ``round(P * 1000)``, so raising P only adds buckets and lowering it only removes some:
that is what keeps canary assignment sticky while the percentage moves.
"""

from __future__ import annotations

from typing import Final

import mmh3

BUCKETS: Final = 100_000
CANARY: Final = "canary"
SHADOW: Final = "shadow"
MIGRATE: Final = "migrate"


def bucket(namespace: str, agent: str, key: str) -> int:
    digest: int = mmh3.hash(f"{namespace}\x00{agent}\x00{key}".encode(), 0, signed=False)
    return digest % BUCKETS


def threshold(percent: float) -> int:
    """How many buckets ``percent`` covers (percent is already validated to be 0-100)."""
    return round(percent * BUCKETS / 100)


def selected(namespace: str, agent: str, key: str, percent: float) -> bool:
    return bucket(namespace, agent, key) < threshold(percent)
