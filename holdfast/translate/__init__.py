"""Translation between provider APIs: a release whose provider speaks another API than the
agent, served faithfully or refused, never silently changed.

The registry (``pairs``) says which agent dialect reaches which provider kind natively or
through which pair; a ``Translation`` carries one exchange (request, answer, stream event by
event) through its pair; ``features`` names what an agent's request uses that a pair may not
carry, and ``judge`` turns an agent's observed traffic into the reasons a provider kind cannot
serve it (configsvc's check before a route change). Pure: no I/O.
"""

from __future__ import annotations

from holdfast.translate.judge import judge, traffic_keys
from holdfast.translate.neutral import BadAnswer, Untranslatable
from holdfast.translate.pairs import (
    BY_NAME,
    PAIRS,
    Pair,
    kinds_serving,
    natively,
    pair_for,
    serves,
)
from holdfast.translate.translation import (
    TRANSLATED_HEADER,
    StreamTranslation,
    Translation,
    error_kind,
    refuse_features,
)

__all__ = [
    "BY_NAME",
    "PAIRS",
    "TRANSLATED_HEADER",
    "BadAnswer",
    "Pair",
    "StreamTranslation",
    "Translation",
    "Untranslatable",
    "error_kind",
    "judge",
    "kinds_serving",
    "natively",
    "pair_for",
    "refuse_features",
    "serves",
    "traffic_keys",
]
