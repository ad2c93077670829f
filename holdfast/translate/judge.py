"""What an agent's traffic tells about a provider kind before a release of it serves the agent.

The sidecar counts, per request it serves, its dialect and each catalogued feature it uses
(``traffic_keys``: ``openai.chat``, ``openai.chat:n``...); the counts ride in its health
snapshot. ``judge`` reads the sum over the agent's sidecars: a dialect that a kind serves
neither natively nor translated, or a feature that its translation refuses, is a reason the
release would fail requests the agent sends today. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from holdfast.translate import features
from holdfast.translate.pairs import natively, pair_for

SEPARATOR = ":"
# A request with a top-level field no translation of its dialect knows (a client newer than
# this module): every translation refuses it. One counter, whatever the field: names sent by
# agents are no labels.
UNKNOWN_FIELD = "unknown_field"


def traffic_keys(dialect: str, body: dict[str, Any]) -> list[str]:
    """The counters one served request of ``dialect`` adds to its sidecar's traffic."""
    found = features.counters(dialect, body)
    if features.unknown(dialect, body) is not None:
        found.append(dialect + SEPARATOR + UNKNOWN_FIELD)
    found.append(dialect)
    return found


def judge(traffic: Mapping[str, int], kind: str) -> list[str]:
    """Why a release of provider ``kind`` cannot serve the requests ``traffic`` counts
    (one sentence each); [] when it can, or when nothing is known."""
    problems: list[str] = []
    for dialect, requests in sorted(traffic.items()):
        if SEPARATOR in dialect or requests <= 0 or natively(dialect, kind):
            continue
        pair = pair_for(dialect, kind)
        if pair is None:
            problems.append(
                f"the agent sent {requests} {dialect} requests, which {kind} providers serve "
                "neither natively nor through a translation"
            )
            continue
        unknown = traffic.get(dialect + SEPARATOR + UNKNOWN_FIELD, 0)
        if unknown > 0:
            problems.append(
                f"{unknown} of the agent's {dialect} requests carried a field the translation "
                f"into {pair.provider} does not know (a client newer than this Holdfast?)"
            )
        for feature in features.CATALOGUE.get(dialect, ()):
            used = traffic.get(dialect + SEPARATOR + feature.name, 0)
            if used > 0 and feature.name in pair.refuses:
                problems.append(
                    f"{used} of the agent's {dialect} requests asked for {feature.what} "
                    f"('{feature.param}'), which the translation into {pair.provider} refuses"
                )
    return problems
