"""The shipped Grafana dashboard and Prometheus alerting rules: well formed, every query parses,
every alert has a severity and a runbook section that exists, and promtool accepts the rules,
their unit tests and the example configuration. (That every metric they name exists in a live
sidecar's and configsvc's /metrics: tests/etcd/test_observability_assets.py.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.observability import (
    PROMETHEUS_CONFIG,
    ROOT,
    RULE_TESTS,
    RULES,
    dashboard,
    dashboard_queries,
    metric_names,
    named_metrics,
    rules,
)

RUNBOOK = ROOT / "docs" / "operating" / "runbook.md"


def promtool() -> str:
    # From Debian's `prometheus` package (scripts/bootstrap.sh puts it in the venv): a missing
    # one fails loudly, as a silently skipped check would look like a passing one.
    beside = Path(sys.executable).parent / "promtool"
    found = shutil.which("promtool") or (str(beside) if beside.exists() else None)
    if found is None:
        pytest.fail("promtool is not installed: run scripts/bootstrap.sh (apt: prometheus)")
    return found


def test_the_dashboard_is_well_formed() -> None:
    board = dashboard()
    panels = board["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"datasource", "agent", "release", "category"}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= variables, (panel["title"], used)
    titles = {p["title"] for p in panels}
    for wanted in ("Error rate by release", "Time to first token p50 / p95 by release",
                   "Cost / hour by release", "Budget use", "Contract violations / s",
                   "Breakers (0 closed, 1 half-open, 2 open)", "Pins",
                   "Shadow similarity p50 / p10", "Sidecars on stale config",
                   "configsvc: etcd watches and leadership"):  # fmt: skip
        assert wanted in titles


def test_every_query_parses_and_names_holdfast_or_gen_ai_metrics() -> None:
    queries = list(dashboard_queries()) + [str(r["expr"]) for r in rules()]
    assert len(queries) > 40
    for query in queries:
        assert metric_names(query), query
    names = named_metrics()
    assert all(n.startswith(("holdfast_", "gen_ai_")) for n in names), sorted(names)
    # the GenAI conventions' names, as the sidecar exports them
    assert {"gen_ai_client_operation_duration_seconds_bucket",
            "gen_ai_server_time_to_first_token_seconds_bucket",
            "gen_ai_client_token_usage_sum"} <= set(names)  # fmt: skip


def test_every_alert_says_how_bad_and_where_its_runbook_is() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("#")
    }
    alerts = rules()
    assert {r["alert"] for r in alerts} >= {
        "HoldfastConfigStale", "HoldfastSidecarEtcdUnreachable", "HoldfastConfigsvcEtcdUnreachable",
        "HoldfastRolloutAborted", "HoldfastBudgetExhausted", "HoldfastToolBreakerOpen",
        "HoldfastPinWritesDropped",
    }  # fmt: skip
    for rule in alerts:
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor in anchors, (rule["alert"], anchor)


def test_promtool_accepts_the_rules_their_tests_and_the_example_config(tmp_path: Path) -> None:
    tool = promtool()
    for args in (["check", "rules", str(RULES)], ["test", "rules", str(RULE_TESTS)]):
        done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
    # the example scrapes configsvc with a token file, which must exist to check the file
    token = tmp_path / "viewer.token"
    token.write_text("x\n")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        PROMETHEUS_CONFIG.read_text().replace("/etc/prometheus/holdfast-viewer.token", str(token))
    )
    shutil.copy(RULES, tmp_path / RULES.name)
    done = subprocess.run([tool, "check", "config", str(config)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
