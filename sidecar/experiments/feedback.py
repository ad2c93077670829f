"""Experiment feedback: ``POST /v1/holdfast/feedback`` and the per-variant outcome counts.

The agent reports an outcome of a session, ``{"session": ID, "metric": NAME, "value": V}``;
the sidecar attributes it to the experiment variant recorded in the session's pin (the one
that really served it) and keeps counts (n, sum, M2) per (experiment, variant, metric) that
sidecar.outcome_publisher writes to etcd; configsvc merges the fleet's for ``experiment report``.

* a rate metric takes ``0``/``1`` (or ``false``/``true``); a mean metric any finite number;
* one outcome per (experiment, session, metric): the tests assume independent observations, so
  a repeat (a retried POST, a corrected value) REPLACES the session's earlier value instead of
  adding one. The sidecar remembers the last ``MAX_REMEMBERED`` sessions' values (LRU); a repeat
  for a session it has forgotten (evicted, or reported before a restart) counts as a new
  observation, and so does the same session reported to two different sidecars.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Final

from aiohttp import web

from holdfast.experiments.series import Series, SeriesKey, to_records
from holdfast.experiments.stats import Counts
from holdfast.json_limits import JsonRefused, loads_bounded, lone_surrogate
from holdfast.keyspace.keys import ID_RE
from holdfast.keyspace.outcomes import OutcomeCounts
from sidecar.config import ConfigState
from sidecar.errors import BodyTooLarge, InvalidRequest, Overloaded, UnknownSession
from sidecar.pins import PinTable

FEEDBACK_PATH: Final = "/v1/holdfast/feedback"
MAX_FEEDBACK_BYTES: Final = 4096
MAX_SERIES: Final = 1024  # (experiment, variant, metric) triples kept; far above real use
# Sessions whose last value is remembered for replacement: ~150 bytes each, so ~8 MB at most;
# an agent process rarely has this many sessions reporting within one experiment.
MAX_REMEMBERED: Final = 50_000


class ExperimentBook:
    """Outcome counts since this sidecar started, one value per session (pure state)."""

    def __init__(self, *, remember: int = MAX_REMEMBERED) -> None:
        self._counts: dict[str, Series] = {}
        self._series = 0
        self._last: OrderedDict[tuple[str, str, str], tuple[str, float]] = OrderedDict()
        self._remember = remember
        self.dropped = 0
        self.replaced = 0
        self.forgotten = 0  # remembered values evicted by the LRU bound

    def add(self, experiment: str, variant: str, metric: str, value: float) -> bool:
        """One more observation, not tied to a session (no replacement)."""
        return self._put(experiment, (variant, metric), value)

    def record(
        self, experiment: str, variant: str, session: str, metric: str, value: float
    ) -> str | None:
        """The session's outcome: "recorded", "replaced" (its earlier value), or None when
        the series cannot be kept (too many series)."""
        who = (experiment, session, metric)
        earlier = self._last.get(who)
        if earlier is not None:
            old_variant, old_value = earlier
            series = self._counts[experiment]
            key = (old_variant, metric)
            series[key] = series[key].remove(old_value)
            self._put(experiment, (variant, metric), value)
            self._last[who] = (variant, value)
            self._last.move_to_end(who)
            self.replaced += 1
            return "replaced"
        if not self._put(experiment, (variant, metric), value):
            return None
        self._last[who] = (variant, value)
        if len(self._last) > self._remember:
            self._last.popitem(last=False)
            self.forgotten += 1
        return "recorded"

    def _put(self, experiment: str, key: SeriesKey, value: float) -> bool:
        series = self._counts.setdefault(experiment, {})
        counts = series.get(key)
        if counts is None:
            if self._series >= MAX_SERIES:
                self.dropped += 1
                return False
            self._series += 1
            counts = Counts()
        series[key] = counts.add(value)
        return True

    def series(self, experiment: str) -> Series:
        return dict(self._counts.get(experiment, {}))

    def experiments(self) -> list[str]:
        return sorted(self._counts)

    def outcomes(self) -> tuple[OutcomeCounts, ...]:
        return tuple(
            item
            for experiment in self.experiments()
            for item in to_records(experiment, self._counts[experiment].items())
        )


def _value(raw: Any, metric_type: str) -> float:
    if metric_type == "rate":
        if raw in (0, 1) or isinstance(raw, bool):
            return float(raw)
        raise InvalidRequest("a rate metric takes 0 or 1 (or false/true)", param="value")
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise InvalidRequest("'value' must be a finite number", param="value")
    return float(raw)


class FeedbackApi:
    def __init__(self, config: ConfigState, pins: PinTable, book: ExperimentBook) -> None:
        self.config = config
        self.pins = pins
        self.book = book

    async def feedback(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_FEEDBACK_BYTES:
            raise BodyTooLarge(f"feedback body is over {MAX_FEEDBACK_BYTES} bytes")
        raw = await request.content.read(MAX_FEEDBACK_BYTES + 1)
        if len(raw) > MAX_FEEDBACK_BYTES:
            raise BodyTooLarge(f"feedback body is over {MAX_FEEDBACK_BYTES} bytes")
        try:
            body = loads_bounded(raw)
        except JsonRefused as exc:
            raise InvalidRequest(f"feedback body refused: {exc}") from exc
        if lone_surrogate(body):
            raise InvalidRequest("feedback body has a lone UTF-16 surrogate in a string")
        if not isinstance(body, dict):
            raise InvalidRequest("feedback body must be a JSON object")
        unknown = sorted(set(body) - {"session", "metric", "value"})
        if unknown:
            raise InvalidRequest(f"unknown field(s): {', '.join(unknown)}", param=unknown[0])
        session, metric = body.get("session"), body.get("metric")
        if not isinstance(session, str) or not ID_RE.fullmatch(session):
            raise InvalidRequest("'session' must be a session id", param="session")
        if not isinstance(metric, str) or not metric:
            raise InvalidRequest("'metric' must be a non-empty string", param="metric")
        if "value" not in body:
            raise InvalidRequest("'value' is required", param="value")
        entry = self.pins.get(session)
        if entry is None or not entry.pin.experiment:
            raise UnknownSession(
                f"session {session!r:.140} was not assigned by an experiment (unknown to this "
                "sidecar, expired, or started before the experiment)",
                param="session",
            )
        experiment, _, variant = entry.pin.experiment.partition("/")
        snapshot = self.config.current
        running = snapshot.route.experiment if snapshot and snapshot.route else None
        if running is None or running.name != experiment:
            raise UnknownSession(
                f"session {session!r:.140} belongs to experiment {experiment!r}, which is not "
                "running any more",
                param="session",
            )
        if metric != running.metric:
            raise InvalidRequest(
                f"unknown metric {metric!r:.70}: experiment {experiment!r} measures "
                f"{running.metric!r}",
                param="metric",
            )
        value = _value(body["value"], running.metric_type)
        outcome = self.book.record(experiment, variant, session, metric, value)
        if outcome is None:
            raise Overloaded(
                f"this sidecar keeps at most {MAX_SERIES} outcome series; the outcome of "
                f"{experiment!r}/{variant!r} was not recorded"
            )
        return web.json_response(
            {
                "recorded": True,
                "replaced": outcome == "replaced",
                "experiment": experiment,
                "variant": variant,
                "metric": metric,
            },
            status=202,
        )

    def routes(self) -> list[web.RouteDef]:
        return [web.post(FEEDBACK_PATH, self.feedback)]
