"""Flags on the sidecar's request path: the ``flags`` record kind and local evaluation.

Everything here reads the current config snapshot -- one attribute load, no I/O, no await.
When the sidecar's config is stale (etcd unreachable for longer than ``--stale-after``, or never
reached since a start from the saved snapshot) every evaluation keeps its last-known value and
variant but says STALE in its reason.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from holdfast.flags.evaluate import Evaluation, evaluate, not_found
from holdfast.keyspace.flag import FlagRecord
from sidecar.config import ConfigSnapshot, ConfigState
from sidecar.flags.metrics import FlagMetrics

FLAGS_KIND: Final = "flags"


def flags_of(snapshot: ConfigSnapshot | None) -> Mapping[str, FlagRecord]:
    if snapshot is None:
        return {}
    return snapshot.of_kind(FLAGS_KIND)  # type: ignore[return-value]  # the decoder's type


def evaluate_flag(
    snapshot: ConfigSnapshot | None, key: str, context: Mapping[str, Any], *, now: float
) -> Evaluation:
    record = flags_of(snapshot).get(key)
    if record is None:
        return not_found(key)
    return evaluate(record.spec, context, now=now)


class FlagEvaluator:
    """Evaluation as the agent sees it (OFREP): current snapshot, STALE marking, metrics."""

    def __init__(
        self,
        config: ConfigState,
        is_stale: Callable[[], bool],
        metrics: FlagMetrics | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.is_stale = is_stale
        self.metrics = metrics
        self.clock = clock

    @property
    def revision(self) -> int:
        snapshot = self.config.current
        return snapshot.revision if snapshot is not None else 0

    def one(self, key: str, context: Mapping[str, Any]) -> Evaluation:
        return self._finish(evaluate_flag(self.config.current, key, context, now=self.clock()))

    def all(self, context: Mapping[str, Any]) -> list[Evaluation]:
        snapshot, now = self.config.current, self.clock()
        stale = self.is_stale()
        return [
            self._finish(evaluate(record.spec, context, now=now), stale)
            for _, record in sorted(flags_of(snapshot).items())
        ]

    def _finish(self, result: Evaluation, stale: bool | None = None) -> Evaluation:
        if not result.failed and (self.is_stale() if stale is None else stale):
            result = dataclasses.replace(result, reason="STALE")
        if self.metrics is not None:
            self.metrics.evaluated(
                result.key if result.error_code != "FLAG_NOT_FOUND" else "(unknown)",
                result.error_code or result.reason,
            )
        return result
