"""What the shipped dashboard and alerting rules query: their PromQL expressions, and the metric
names those name (parsed with promql-parser, Grafana's variables replaced first)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import promql_parser
import yaml

ROOT: Final = Path(__file__).resolve().parent.parent
DASHBOARD: Final = ROOT / "deploy" / "grafana" / "holdfast.json"
RULES: Final = ROOT / "deploy" / "prometheus" / "holdfast-alerts.yml"
RULE_TESTS: Final = ROOT / "deploy" / "prometheus" / "holdfast-alerts.test.yml"
PROMETHEUS_CONFIG: Final = ROOT / "deploy" / "prometheus" / "prometheus.yml"
# Grafana's variables, as a query sees them once Grafana has filled them in.
GRAFANA_VARIABLES: Final = {"$__rate_interval": "5m", "$__interval": "1m", "${datasource}": ""}
_VARIABLE: Final = re.compile(r"\$\{?(\w+)\}?")


def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def dashboard_queries() -> Iterator[str]:
    board = dashboard()
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield str(target["expr"])
    for annotation in board["annotations"]["list"]:
        if "expr" in annotation:
            yield str(annotation["expr"])


def as_prometheus_sees_it(query: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        query = query.replace(name, value)
    return _VARIABLE.sub(".*", query)  # $agent, $release...: "all"


def metric_names(query: str) -> set[str]:
    """Every metric a PromQL query selects."""
    found: set[str] = set()
    stack: list[Any] = [promql_parser.parse(as_prometheus_sees_it(query))]
    while stack:
        node = stack.pop()
        kind = type(node).__name__
        if kind == "VectorSelector":
            if node.name:
                found.add(node.name)
        elif kind == "MatrixSelector":
            stack.append(node.vector_selector)
        elif kind == "BinaryExpr":
            stack += [node.lhs, node.rhs]
        elif kind in ("AggregateExpr", "ParenExpr", "UnaryExpr", "SubqueryExpr"):
            stack.append(node.expr)
        elif kind == "Call":
            stack += list(node.args)
    return found


def named_metrics() -> dict[str, set[str]]:
    """metric name -> where it is used ("dashboard", "rules")."""
    out: dict[str, set[str]] = {}
    for query in dashboard_queries():
        for name in metric_names(query):
            out.setdefault(name, set()).add("dashboard")
    for rule in rules():
        for name in metric_names(str(rule["expr"])):
            out.setdefault(name, set()).add("rules")
    return out
