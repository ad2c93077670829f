"""Feature flags in configsvc: flagd files applied in one transaction, kill switches, history,
and the route's flag."""

from configsvc.flags.api import FlagsApi
from configsvc.flags.ops import FlagOps

__all__ = ["FlagOps", "FlagsApi"]
