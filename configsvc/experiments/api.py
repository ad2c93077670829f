"""HTTP handlers of A/B experiments, under ``/v1/experiments``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from configsvc import errors
from configsvc.experiments.ops import ExperimentOps
from configsvc.http import actor_of, name, parse_object, read_body, reply, text
from holdfast.keyspace.experiment import MAX_VARIANTS, METRIC_TYPES, Variant

START_FIELDS: Final = frozenset({"agent", "variants", "metric", "metric_type", "reason"})


def _name(request: web.Request) -> str:
    return name(request.match_info["name"], what="experiment", param="name")


def parse_variants(raw: Any) -> tuple[Variant, ...]:
    """``[{"label", "release", "weight"}, ...]``; weights are percentages adding up to 100."""
    if not isinstance(raw, list) or not 2 <= len(raw) <= MAX_VARIANTS:
        raise errors.InvalidRequest(
            f"'variants' must be a list of 2 to {MAX_VARIANTS} objects", param="variants"
        )
    out = []
    for item in raw:
        if not isinstance(item, dict) or set(item) - {"label", "release", "weight"}:
            raise errors.InvalidRequest(
                'each variant is {"label", "release", "weight"}', param="variants"
            )
        weight = item.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise errors.InvalidRequest("variant 'weight' must be a number", param="variants")
        label = name(text(item, "label", required=True), what="variant label", param="variants")
        release = name(text(item, "release", required=True), what="release", param="variants")
        out.append(Variant(label, release, float(weight)))
    return tuple(out)


def _metric_type(obj: Mapping[str, Any]) -> str:
    value = text(obj, "metric_type", required=True)
    if value not in METRIC_TYPES:
        raise errors.InvalidRequest(
            f"'metric_type' must be one of {', '.join(METRIC_TYPES)}", param="metric_type"
        )
    return value


class ExperimentsApi:
    def __init__(self, ops: ExperimentOps) -> None:
        self.ops = ops

    async def list_all(self, request: web.Request) -> web.Response:
        return reply({"experiments": await self.ops.list_all()})

    async def start(self, request: web.Request) -> web.Response:
        experiment, actor = _name(request), actor_of(request)
        obj = parse_object(await read_body(request), START_FIELDS)
        record, revision = await self.ops.start(
            experiment,
            agent=name(text(obj, "agent", required=True), what="agent", param="agent"),
            variants=parse_variants(obj.get("variants")),
            metric=name(text(obj, "metric", required=True), what="metric", param="metric"),
            metric_type=_metric_type(obj),
            reason=text(obj, "reason"),
            actor=actor,
        )
        return reply({"experiment": record.public(), "revision": revision}, status=201)

    async def show(self, request: web.Request) -> web.Response:
        record, revision = await self.ops.get(_name(request))
        return reply({"experiment": record.public(), "mod_revision": revision})

    async def stop(self, request: web.Request) -> web.Response:
        experiment, actor = _name(request), actor_of(request)
        obj = parse_object(await read_body(request), frozenset({"winner", "reason"}), empty_ok=True)
        winner = text(obj, "winner")
        record, route, revision = await self.ops.stop(
            experiment, winner=winner, reason=text(obj, "reason"), actor=actor
        )
        return reply({"experiment": record.public(), "route": route.public(), "revision": revision})

    async def report(self, request: web.Request) -> web.Response:
        return reply(await self.ops.report(_name(request)))

    def routes(self) -> list[web.RouteDef]:
        base = "/v1/experiments"
        return [
            web.get(base, self.list_all),
            web.post(f"{base}/{{name}}", self.start),
            web.get(f"{base}/{{name}}", self.show),
            web.post(f"{base}/{{name}}/stop", self.stop),
            web.get(f"{base}/{{name}}/report", self.report),
        ]
