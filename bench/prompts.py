"""What prompt substitution costs on the request path, and what an experiment report costs.

In one process and one run:

* ``PromptFilter.open`` (the sidecar's filter: find the reference, look up the session's
  version in the per-snapshot index, check and fill the variables, edit the body) for a chat
  body with ``@prompt:NAME`` and two variables, beside the same filter on a body without any
  reference (the cost every other request pays) -- 200 prompts x 5 versions are known;
* ``merge_reports`` + ``report`` (configsvc's ``experiment report``): decode 500 sidecars'
  outcome reports (``outcomes/<sidecar-id>/<experiment>``, 2 variants' counts each, with M2
  as sidecars write them), merge the counts (Chan's parallel formula) and run the test.

``python -m bench.prompts`` replaces its section of bench/RESULTS.md.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from typing import Any, Final

from bench.sections import markers, publish
from bench.stats import median, percentile
from configsvc.experiments.ops import merge_reports
from holdfast.dialects import openai_chat
from holdfast.experiments.series import to_records
from holdfast.experiments.stats import Counts, report
from holdfast.keyspace import Keyspace, Pin, Release, Route
from holdfast.keyspace.outcomes import OutcomeReport
from holdfast.keyspace.prompt import PromptVersion, Status
from holdfast.store import KeyValue
from sidecar.config.kinds import CONFIG_KINDS
from sidecar.config.state import ConfigState
from sidecar.pins.table import PinTable
from sidecar.pipeline.exchange import Exchange
from sidecar.prompts.filter import PromptFilter
from sidecar.routing.resolve import Resolved

AGENT: Final = "bench"
KS: Final = Keyspace("bench")
PROMPTS: Final = 200
VERSIONS: Final = 5
CALLS: Final = 100_000
BATCH: Final = 1_000
SIDECARS: Final = 500
REPORTS: Final = 30
START, END = markers("prompts")
TEXT: Final = (
    "You are the support agent of {{shop}}. Answer in {{language}}, briefly and politely. " * 20
)


def setup() -> tuple[PromptFilter, Resolved]:
    state = ConfigState(KS, AGENT, kinds=CONFIG_KINDS)
    kvs: dict[str, KeyValue] = {}
    for p in range(PROMPTS):
        for v in range(1, VERSIONS + 1):
            status: Status = "active" if v == VERSIONS else "deprecated"
            record = PromptVersion(name=f"p{p}", version=str(v), text=TEXT, status=status)
            key = KS.prompt(f"p{p}", str(v))
            kvs[key] = KeyValue(key, record.encode(), 1, 1, 1)
    release = Release(
        agent=AGENT, name="r1", model="m", base_url="http://127.0.0.1:1", prompts={"p7": "active"}
    )
    kvs[KS.release(AGENT, "r1")] = KeyValue(KS.release(AGENT, "r1"), release.encode(), 1, 1, 1)
    route = Route(agent=AGENT, stable="r1")
    kvs[KS.route(AGENT)] = KeyValue(KS.route(AGENT), route.encode(), 1, 1, 1)
    state.apply_reset(10, kvs, "etcd")
    pins = PinTable(KS, AGENT)
    pins.record_new(
        Pin(agent=AGENT, session="s1", release="r1", pinned_at=1, revision=1, prompts={"p7": "3"})
    )
    return PromptFilter(state, pins), Resolved(release, 10, "s1", "pinned")


def per_call_ns(call: Callable[[], object]) -> list[float]:
    samples = []
    for _ in range(CALLS // BATCH):
        t0 = time.perf_counter_ns()
        for _ in range(BATCH):
            call()
        samples.append((time.perf_counter_ns() - t0) / BATCH)
    return samples


def substitution() -> dict[str, list[float]]:
    flt, resolved = setup()
    vars_ = {"shop": "Acme", "language": "English"}

    def exchange(first: dict[str, Any]) -> Exchange:
        body: dict[str, Any] = {
            "model": AGENT,
            "messages": [first, {"role": "user", "content": "hi"}],
        }
        if first["content"].startswith("@prompt:"):
            body["holdfast_prompt_vars"] = vars_
        chat = openai_chat.DIALECT
        return Exchange(
            dialect=chat,
            request=chat.parse(body),
            resolved=resolved,
            request_id="r",
            headers={},
        )

    with_ref = {"role": "system", "content": "@prompt:p7"}
    literal = {"role": "system", "content": "You are a literal prompt."}
    return {
        "no reference (literal system prompt)": per_call_ns(lambda: flt.open(exchange(literal))),
        "`@prompt:NAME` + 2 variables, pinned version": per_call_ns(
            lambda: flt.open(exchange(with_ref))
        ),
        "building the exchange alone (subtracted above)": per_call_ns(lambda: exchange(literal)),
    }


def snapshots() -> list[bytes]:
    rng = random.Random(1)
    out = []
    for i in range(SIDECARS):
        series = []
        for v in ("a", "b"):
            n = rng.randrange(50, 500)
            successes = rng.randrange(n)
            series.append(((v, "resolved"), Counts.from_sums(n, successes, successes)))
        report = OutcomeReport(
            experiment="tone",
            sidecar_id=f"sc-{i}",
            at=1.0,
            counts=tuple(to_records("tone", series)),
        )
        out.append(report.encode())
    return out


def aggregation() -> list[float]:
    values = snapshots()
    samples: list[float] = []
    for _ in range(REPORTS):
        t0 = time.perf_counter_ns()
        counts, _n, _bad = merge_reports(values, "tone", "resolved")
        report(["a", "b"], counts, "rate")
        samples.append(time.perf_counter_ns() - t0)
    assert isinstance(counts["a"], Counts)
    return samples


def render(sub: dict[str, list[float]], agg: list[float]) -> str:
    base = median(sub["building the exchange alone (subtracted above)"])
    rows = []
    for name, v in sub.items():
        net = "" if name.startswith("building") else f"{(median(v) - base) / 1000:.2f}"
        rows.append(f"| {name} | {median(v) / 1000:.2f} | {percentile(v, 99) / 1000:.2f} | {net} |")
    plain, ref = (median(v) - base for v in list(sub.values())[:2])
    return "\n".join(
        [
            START,
            "## Prompts: substitution and experiment reports",
            "",
            f"`python -m bench.prompts`, {time.strftime('%Y-%m-%d %H:%M UTC')}: one process, one "
            f"run. {PROMPTS * VERSIONS:,} prompt versions known ({PROMPTS} prompts x {VERSIONS}); "
            f"the text is {len(TEXT):,} characters with 2 variables. {CALLS:,} calls of "
            f"`PromptFilter.open` per row (p50/p99 over batches of {BATCH:,}), each on a fresh "
            "request body; the last column subtracts the cost of building that body.",
            "",
            "| request | p50 µs | p99 µs | filter alone µs |",
            "|---|---|---|---|",
            *rows,
            "",
            f"Substituting a managed prompt costs {ref / 1000:.1f} µs per request; a request "
            f"without a reference pays {plain / 1000:.2f} µs for the check.",
            "",
            f"`experiment report` over {SIDECARS} sidecars' outcome reports (decode, sum the "
            f"experiment's counts, test): p50 {median(agg) / 1e6:.1f} ms, max "
            f"{max(agg) / 1e6:.1f} ms over {REPORTS} runs (etcd's range read not included).",
            END,
        ]
    )


def main() -> int:
    sub = substitution()
    agg = aggregation()
    return publish("prompts", render(sub, agg))


if __name__ == "__main__":
    sys.exit(main())
