"""Token budgets: admission cost on the request path, and overspend of the fleet scenario.

1. In process, no network (bench/budget_admission.py): the budget filter's cost per request
   with no budget configured, with calendar and rolling windows, and with both tokens and cost
   limited.
2. Real processes (bench/budget_overspend.py): SIDECARS sidecars share one agent budget under
   REQUESTS concurrent streams, some cut by the client, some reset by the provider; what the
   sidecars charged is compared with what the fake produced, and the provider-side spend with
   the limit and the documented bound.

``python -m bench.budgets`` replaces its section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import uvloop

from bench.budget_admission import PER_ROUND, ROUNDS, WINDOWS, admission_cost
from bench.budget_overspend import LIMIT, REQUESTS, SIDECARS, scenario
from bench.fleet import AGENT
from bench.sections import markers, publish
from bench.stats import percentile

START, END = markers("budgets")


def render(costs: dict[str, list[float]], fleet: dict[str, Any]) -> str:
    def row(label: str, v: list[float]) -> str:
        return f"| {label} | {statistics.median(v):.1f} | {percentile(v, 90):.1f} |"

    c = fleet["counts"]
    produced = fleet["produced_prompt"] + fleet["produced_completion"]
    (r1_charged, r1_produced), (r2_charged, r2_produced) = fleet["r1"], fleet["r2"]
    lost = r2_produced - r2_charged
    return "\n".join(
        [
            START,
            "## Token budgets",
            "",
            f"`python -m bench.budgets`, {time.strftime('%Y-%m-%d %H:%M UTC')}.",
            "",
            "Admission cost on the request path, in-process: the budget filter's first-slice",
            "check (the slice is held: nothing waits) + open + body + close per request, µs",
            f"(median and p90 of {ROUNDS} rounds of {PER_ROUND} requests).",
            "",
            "| request | p50 µs | p90 µs |",
            "|---|---|---|",
            row("no budget configured", costs["none"]),
            row("session `day` + fleet-wide agent `month` (calendar)", costs["calendar"]),
            row("session `1h` + fleet-wide agent `1d` (rolling, 60 sub-buckets)", costs["rolling"]),
            row("as calendar, each scope limiting tokens and cost (USD)", costs["cost"]),
            "",
            f"Fleet scenario, real processes: {SIDECARS} sidecars share `agent:{AGENT}` = {LIMIT}",
            f"tokens per rolling hour; {REQUESTS} concurrent streams: {c['done']} read to the end,",
            f"{c['reset']} cut by the provider's reset ({fleet['resets']} resets in all), "
            f"{c['cut']} cut by the",
            f"client, {c['refused']} refused with 429; {fleet['elapsed']:.1f} s in all.",
            "",
            "| measure | tokens |",
            "|---|---|",
            f"| limit | {LIMIT} |",
            f"| charged to the budget (all sidecars): prompt + completion | {fleet['spent']} "
            f"({fleet['charged_prompt']} + {fleet['charged_completion']}) |",
            f"| produced by the provider (the fake's count): prompt + completion | {produced} "
            f"({fleet['produced_prompt']} + {fleet['produced_completion']}) |",
            f"| completion charged / produced, release without resets (cut streams included) | "
            f"{r1_charged} / {r1_produced} |",
            f"| completion charged / produced, release whose provider resets | "
            f"{r2_charged} / {r2_produced} |",
            f"| overspend: provider-side spend - limit | {produced - LIMIT} |",
            f"| bound: 0 admitted beyond the limit + tokens destroyed by resets (≤ 1 each; "
            f"{fleet['resets']} resets) | {lost} |",
            "",
            "Reservations are worst cases (prompt as UTF-8 bytes + the written cap), so the",
            "budget is never over-admitted; a negative overspend is budget held back by",
            "reservations of requests in flight when the slices ran out, plus the prompt",
            "estimates charged for streams without usage (the bytes estimate is an upper bound",
            "of the provider's count). Streams the client cut are charged exactly: the sidecar",
            "half-closes the provider connection and reads all it wrote until it stopped. A",
            "provider that resets its own stream can destroy a token it wrote in the same",
            "instant, which the fake counts as produced.",
            "",
            "A cost limit adds a second meter per scope (micro-dollars), checked and reserved in",
            "the same synchronous step as the tokens, plus one price lookup in the fleet table.",
            END,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(
        prog="python -m bench.budgets",
        description="Token budgets: admission cost on the request path (in-process) and the "
        f"fleet scenario ({SIDECARS} sidecars, {REQUESTS} streams, real processes); replaces "
        "the budgets section of bench/RESULTS.md.",
    ).parse_args(argv)
    costs = {kind: admission_cost(kind) for kind in WINDOWS}
    return publish("budgets", render(costs, uvloop.run(scenario())))


if __name__ == "__main__":
    raise SystemExit(main())
