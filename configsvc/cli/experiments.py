"""``holdfastctl experiment start|stop|report|list|show``: A/B experiments on releases."""

from __future__ import annotations

import argparse
from typing import Any

from configsvc.cli.client import Client, segment
from configsvc.cli.commands import Leaf
from configsvc.cli.render import tables as render

Result = tuple[dict[str, Any], str]


def _variants(text: str) -> list[tuple[str, str]]:
    """``a=RELEASE_A,b=RELEASE_B``."""
    out = []
    for part in text.split(","):
        label, sep, release = part.strip().partition("=")
        if not sep or not label or not release:
            raise argparse.ArgumentTypeError(f"expected LABEL=RELEASE,...; got {part!r}")
        out.append((label, release))
    return out


def _split(text: str) -> list[float]:
    try:
        return [float(p) for p in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected percentages like 50,50: {text!r}") from exc


def _base(name: str) -> str:
    return f"/v1/experiments/{segment(name)}"


def start(c: Client, a: argparse.Namespace) -> Result:
    split = a.split or [100.0 / len(a.variants)] * len(a.variants)
    if len(split) != len(a.variants):
        raise SystemExit(
            f"holdfastctl experiment start: --split has {len(split)} shares for "
            f"{len(a.variants)} variants"
        )
    variants = [
        {"label": label, "release": release, "weight": weight}
        for (label, release), weight in zip(a.variants, split, strict=True)
    ]
    payload = {
        "agent": a.agent,
        "variants": variants,
        "metric": a.metric,
        "metric_type": a.metric_type,
        "reason": a.reason,
    }
    body = c.call("POST", _base(a.name), payload)
    e = body["experiment"]
    parts = ", ".join(f"{v['label']}={v['release']} ({v['weight']:g}%)" for v in e["variants"])
    return body, f"experiment {e['name']} running on {e['agent']}: {parts}; metric {e['metric']}"


def stop(c: Client, a: argparse.Namespace) -> Result:
    body = c.call("POST", f"{_base(a.name)}/stop", {"winner": a.winner or "", "reason": a.reason})
    e, route = body["experiment"], body["route"]
    tail = f"; winner {e['winner']}: stable is now {route['stable']}" if e["winner"] else ""
    return body, f"experiment {e['name']} stopped{tail}"


def list_(c: Client, a: argparse.Namespace) -> Result:
    body = c.call("GET", "/v1/experiments")
    rows = [
        [e["name"], e["agent"], e["state"], e["metric"], e["metric_type"],
         render.cell(e["winner"]), render.when(e["started_at"])]
        for e in body["experiments"]
    ]  # fmt: skip
    headers = ("EXPERIMENT", "AGENT", "STATE", "METRIC", "TYPE", "WINNER", "STARTED")
    return body, render.table(headers, rows)


def show(c: Client, a: argparse.Namespace) -> Result:
    body = c.call("GET", _base(a.name))
    e = body["experiment"]
    pairs = [(k, e[k]) for k in ("name", "agent", "state", "metric", "metric_type", "winner")]
    pairs.append(("variants", [f"{v['label']}={v['release']}:{v['weight']:g}%"
                               for v in e["variants"]]))  # fmt: skip
    return body, render.fields(pairs)


def _num(v: Any, fmt: str = ".4g") -> str:
    return "-" if v is None else format(v, fmt)


def report(c: Client, a: argparse.Namespace) -> Result:
    body = c.call("GET", f"{_base(a.name)}/report")
    rows = [
        [r["variant"], str(r["n"]), _num(r["mean"]),
         "-" if r["ci95"] is None else f"[{_num(r['ci95'][0])}, {_num(r['ci95'][1])}]"]
        for r in body["variants"]
    ]  # fmt: skip
    lines = [render.table(("VARIANT", "N", "MEAN", "95% CI"), rows), ""]
    for cmp in body["comparisons"]:
        head = f"{cmp['variant']} vs {cmp['control']}: "
        if cmp["state"] == "not_enough_data":
            why = cmp.get("reason") or f"each variant needs n >= {body['min_samples']}"
            lines.append(head + f"not enough data ({why})")
            continue
        verdict = "significant" if cmp["significant"] else "not significant"
        lines.append(
            head + f"{cmp['test']} statistic {cmp['statistic']:.3f}, p = {cmp['p_value']:.4g} "
            f"({verdict} at {body['alpha']:g}); difference {cmp['difference']:+.4g}"
        )
    lines.append(f"sidecars reporting: {body['sidecars_reporting']}")
    return body, "\n".join(lines)


def register(nouns: Any, leaf: Leaf) -> None:
    verbs = nouns.add_parser("experiment", help="A/B experiments").add_subparsers(
        dest="verb", required=True, metavar="VERB"
    )
    sp = leaf(verbs, "start", start, "assign new sessions to variants by sticky hash")
    sp.add_argument("name")
    sp.add_argument("--agent", required=True)
    sp.add_argument("--variants", required=True, type=_variants, metavar="a=REL_A,b=REL_B")
    sp.add_argument("--split", type=_split, default=None, metavar="50,50",
                    help="percent of new sessions per variant (default: equal)")  # fmt: skip
    sp.add_argument("--metric", required=True, help="the outcome agents report as feedback")
    sp.add_argument("--metric-type", choices=("rate", "mean"), default="rate",
                    help="rate: 0/1 outcomes (z-test); mean: numbers (Welch's t-test)")  # fmt: skip
    sp.add_argument("--reason", default="")
    sp = leaf(verbs, "stop", stop, "stop; --winner makes its release stable for new sessions")
    sp.add_argument("name")
    sp.add_argument("--winner", default=None, metavar="LABEL")
    sp.add_argument("--reason", default="")
    sp = leaf(verbs, "report", report, "per-variant n, mean, 95% CI and significance test")
    sp.add_argument("name")
    leaf(verbs, "list", list_, "list experiments")
    sp = leaf(verbs, "show", show, "show one experiment")
    sp.add_argument("name")
