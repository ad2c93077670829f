"""Human output of fleet health: the ``holdfastctl status`` table and the health-gate checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from configsvc.cli.render.tables import table


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v:.1%}"


def _num(v: Any, fmt: str = "{:.0f}") -> str:
    return "-" if v is None else fmt.format(v)


def _cost(v: Any) -> str:
    return "-" if v is None else f"${v:.5f}"


def release_rows(body: Mapping[str, Any], window: str) -> list[list[str]]:
    rows = []
    for name, r in body["releases"].items():
        w = r["windows"][window]
        shadow = (r.get("shadow") or {}).get(window) or {}
        spread = r.get("session_spread") or {}
        rows.append(
            [
                f"{name} ({r['role']})",
                _pct(r.get("traffic_share")),
                str(r.get("sessions", 0)),
                str(w["requests"]),
                _pct(w["error_rate"]),
                _num(w["p50_ms"]),
                _num(w["p95_ms"]),
                _num(w["tokens_per_request"], "{:.1f}"),
                _cost(w["cost_per_request"]),
                str(w["violations"]),
                _num(spread.get("tokens_p95")),
                _num(shadow.get("similarity", r.get("shadow_similarity")), "{:.3f}"),
                _pct(shadow.get("tool_agreement")),
            ]
        )
    return rows


HEADERS = ("RELEASE", "SHARE", "SESSIONS", "REQS", "ERRORS", "P50MS", "P95MS", "TOK/REQ",
           "COST/REQ", "VIOL", "SESS_TOK95", "SHADOW_SIM", "TOOL_AGREE")  # fmt: skip


TOOL_HEADERS = ("RELEASE", "TOOL", "CALLS", "ERRORS", "AVG_MS", "P95_MS", "VIOL", "UNAVAIL")


def tool_rows(body: Mapping[str, Any], window: str) -> list[list[str]]:
    """Per release x tool: calls through the sidecar, errors, latency and contract violations."""
    rows = []
    for name, r in body["releases"].items():
        for tool, t in (r.get("tools", {}).get(window) or {}).items():
            kinds = ",".join(f"{k}={v}" for k, v in sorted(t["violations_by_kind"].items()))
            rows.append(
                [
                    name,
                    f"{tool}@{t['version']}" if t["version"] else tool,
                    str(t["calls"]),
                    f"{t['errors']} ({_pct(t['error_rate'])})" if t["calls"] else str(t["errors"]),
                    _num(t["avg_ms"], "{:.1f}"),
                    _num(t["p95_ms"]),
                    f"{t['violations']} {kinds}".strip(),
                    str(t["unavailable"]),
                ]
            )
    return rows


def comparison(cmp: Mapping[str, Any] | None) -> str:
    if not cmp:
        return "canary vs stable: no canary"
    parts = []
    for field, v in cmp.items():
        if v is None:
            parts.append(f"{field} -")
        elif "delta" in v:
            parts.append(f"{field} {v['delta']:+.1%}")
        else:
            parts.append(f"{field} x{v['ratio']:.2f}" if v["ratio"] is not None else f"{field} -")
    return "canary vs stable (1m): " + ", ".join(parts)


def checks(report: Mapping[str, Any] | None) -> str:
    if not report:
        return "health gate: none (time alone advances the plan)"
    streak = report.get("consecutive_fails")
    head = f"health gate: {report['verdict']}" + (
        f" (consecutive fails {streak}/{report['policy']['fails_to_abort']})"
        if streak is not None
        else ""
    )
    rows = [
        [
            c["gate"],
            c["scope"],
            c["verdict"].upper(),
            "-" if c["canary"] is None else f"{c['canary']:.4g}",
            "-" if c["stable"] is None else f"{c['stable']:.4g}",
            f"{c['limit']:g}",
            c["detail"] if c["verdict"] != "pass" else "",
        ]
        for c in _ordered(report.get("checks") or [])
    ]
    if not rows:
        return head
    return (
        head + "\n" + table(("GATE", "SCOPE", "VERDICT", "CANARY", "STABLE", "LIMIT", "WHY"), rows)
    )


def _ordered(items: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    rank = {"fail": 0, "inconclusive": 1, "pass": 2}
    return sorted(items, key=lambda c: (rank.get(c["verdict"], 3), c["scope"] != "overall"))


def status(body: Mapping[str, Any], window: str = "1m") -> str:
    blocks = []
    for agent in body.get("agents", []):
        head = (
            f"agent {agent['agent']}: stable {agent['stable']}, canary "
            f"{agent['canary'] or '-'} {agent['canary_percent']:g}% · {agent['sidecars']} sidecars"
            f" · window {window}"
        )
        if not agent.get("etcd_connected", True):
            head += f" · etcd unreachable, data {agent.get('data_age_s')}s old"
        if agent.get("health_unreachable"):
            # no owner replica answered: what follows is this replica's presence-only view
            head += f" · health owners unreachable ({agent['health_unreachable']})"
        lines = [head, table(HEADERS, release_rows(agent, window)) if agent["releases"] else ""]
        if tools := tool_rows(agent, window):
            lines.append(table(TOOL_HEADERS, tools))
        lines.append(comparison(agent.get("canary_vs_stable")))
        if agent.get("rollout"):
            r = agent["rollout"]
            lines.append(f"rollout {r['release']}: {r['state']} at {r['percent']:g}%")
            lines.append(checks(agent.get("health_gate")))
        blocks.append("\n".join(line for line in lines if line))
    return "\n\n".join(blocks) if blocks else "no agents"
