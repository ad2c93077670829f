"""Where new sessions go: canary, blue-green switch, shadow (and its report), category rules,
and deliberate migration of pinned sessions (``PinOps``, which rollouts use too)."""

from configsvc.traffic.api import TrafficApi
from configsvc.traffic.categories import CategoryApi
from configsvc.traffic.ops import TrafficOps
from configsvc.traffic.pins import Migration, PinOps, Selection, StoredPin

__all__ = [
    "CategoryApi",
    "Migration",
    "PinOps",
    "Selection",
    "StoredPin",
    "TrafficApi",
    "TrafficOps",
]
