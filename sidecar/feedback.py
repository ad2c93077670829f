"""Experiment feedback: ``POST /v1/holdfast/feedback`` and the per-variant outcome counts.

The agent reports an outcome of a session, ``{"session": ID, "metric": NAME, "value": V}``;
the sidecar attributes it to the experiment variant recorded in the session's pin (the one
that really served it) and adds it to cumulative counts (n, sum, sum of squares) that ride in
the health snapshot; configsvc sums the fleet's counts for ``experiment report``.

* a rate metric takes ``0``/``1`` (or ``false``/``true``); a mean metric any finite number;
* each call is one observation: report a session's outcome once if the unit is the session.
"""

from __future__ import annotations

import math
from typing import Any, Final

from aiohttp import web

from holdfast.keyspace.keys import ID_RE
from holdfast.keyspace.outcomes import OutcomeCounts
from sidecar.config import ConfigState
from sidecar.errors import BodyTooLarge, InvalidRequest, UnknownSession
from sidecar.json_limits import JsonRefused, loads_bounded
from sidecar.pins import PinTable
from sidecar.provider_json import lone_surrogate

FEEDBACK_PATH: Final = "/v1/holdfast/feedback"
MAX_FEEDBACK_BYTES: Final = 4096
MAX_SERIES: Final = 1024  # (experiment, variant, metric) triples kept; far above real use


class ExperimentBook:
    """Cumulative outcome counts since this sidecar started (pure state)."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str, str], list[float]] = {}
        self.dropped = 0

    def add(self, experiment: str, variant: str, metric: str, value: float) -> bool:
        key = (experiment, variant, metric)
        counts = self._counts.get(key)
        if counts is None:
            if len(self._counts) >= MAX_SERIES:
                self.dropped += 1
                return False
            counts = self._counts[key] = [0, 0.0, 0.0]
        counts[0] += 1
        counts[1] += value
        counts[2] += value * value
        return True

    def outcomes(self) -> tuple[OutcomeCounts, ...]:
        return tuple(
            OutcomeCounts(experiment=e, variant=v, metric=m, n=int(c[0]), total=c[1], total_sq=c[2])
            for (e, v, m), c in sorted(self._counts.items())
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
        self.book.add(experiment, variant, metric, value)
        return web.json_response(
            {"recorded": True, "experiment": experiment, "variant": variant, "metric": metric},
            status=202,
        )

    def routes(self) -> list[web.RouteDef]:
        return [web.post(FEEDBACK_PATH, self.feedback)]
