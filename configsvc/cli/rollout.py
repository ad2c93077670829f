"""``holdfastctl rollout start|status|pause|resume|promote|abort``: progressive rollouts."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from configsvc.cli.client import Client, segment
from configsvc.cli.commands import Leaf, provider_change_option, with_provider_change
from configsvc.cli.render import health as render_health
from configsvc.cli.render.tables import fields, value, when
from configsvc.limits import ROLLOUT_ACTIONS as ACTIONS


def _path(agent: str) -> str:
    return f"/v1/agents/{segment(agent)}/rollout"


def pct(v: Any) -> str:
    return f"{v:g}%" if isinstance(v, int | float) and not isinstance(v, bool) else "-"


def render_status(body: Mapping[str, Any]) -> str:
    r = body.get("rollout") or {}
    controller = body.get("controller") or {}
    if r.get("state", "none") == "none":
        return f"agent {body['agent']}: no rollout (stable {body['stable']})"
    steps = r.get("steps") or []
    plan = " → ".join(f"[{pct(s)}]" if i == r.get("step") else pct(s) for i, s in enumerate(steps))
    pairs: list[tuple[str, Any]] = [
        ("agent", body["agent"]),
        ("release", r.get("release")),
        ("state", r.get("state")),
        ("plan", plan),
        ("canary", pct(body.get("canary_percent"))),
        ("stable", body.get("stable")),
        ("interval", f"{value(r.get('interval_s'))}s"),
        ("next_step", when(r.get("next_step_at"))),
        ("remaining", f"{r['remaining_s']:.0f}s" if r.get("remaining_s") is not None else "-"),
        ("started", f"{when(r.get('started_at'))} by {value(r.get('started_by'))}"),
        ("ended", when(r.get("ended_at"))),
        ("reason", r.get("reason")),
        ("controller", controller.get("leader") or "no leader"),
        ("mod_revision", body.get("mod_revision")),
    ]
    out = fields(pairs)
    if r.get("state") in ("running", "paused"):
        out += "\n" + render_health.checks(body.get("health_gate"))
    return out


def render_change(action: str, body: Mapping[str, Any]) -> str:
    route = body["route"]
    r = route.get("rollout") or {}
    rev = body.get("mod_revision")
    if not body.get("changed", True):
        return (
            f"rollout {route['agent']}: already {r.get('state')} (revision {rev}; nothing written)"
        )
    return (
        f"rollout {route['agent']}: {action} → {r.get('state')}, release {r.get('release')}, "
        f"canary {pct(route.get('canary_percent'))}, stable {route['stable']} (revision {rev})"
    )


# --flag -> policy field; numbers are checked by the API so CLI and HTTP refuse alike
POLICY_FLAGS = {
    "max_error_rate_delta": float,
    "max_p95_ratio": float,
    "max_tokens_change": float,
    "max_cost_ratio": float,
    "max_violation_rate_delta": float,
    "min_shadow_similarity": float,
    "min_samples": int,
    "fails_to_abort": int,
    "inconclusive_after": str,
    "window": str,
}


def policy(a: argparse.Namespace) -> dict[str, Any] | None:
    given: dict[str, Any] = {
        k: getattr(a, k) for k in POLICY_FLAGS if getattr(a, k, None) is not None
    }
    if a.migrate_on_abort:
        given["migrate_on_abort"] = True
    if not given and not a.health_gate:
        return None
    return given


def start(c: Client, a: argparse.Namespace) -> tuple[dict[str, Any], str]:
    payload = {"release": a.release, "steps": a.steps, "interval": a.interval, "reason": a.reason}
    if (wanted := policy(a)) is not None:
        payload["policy"] = wanted
    body = c.call("POST", _path(a.agent), with_provider_change(payload, a))
    return body, render_change("start", body)


def status(c: Client, a: argparse.Namespace) -> tuple[dict[str, Any], str]:
    body = c.call("GET", _path(a.agent))
    return body, render_status(body)


def _action(name: str) -> Any:
    def run(c: Client, a: argparse.Namespace) -> tuple[dict[str, Any], str]:
        payload: dict[str, Any] = {"reason": a.reason}
        if getattr(a, "migrate", False):
            payload["migrate"] = True
        body = c.call("POST", f"{_path(a.agent)}/{name}", payload)
        text = render_change(name, body)
        moved = body.get("migration")
        if moved:
            text += "\n" + (
                f"migration: {moved['error']}"
                if "error" in moved
                else f"migrated {moved['migrated']} session(s) from {moved['from']} to "
                f"{moved['to']}, skipped {moved['skipped']}"
            )
        return body, text

    return run


def register(nouns: Any, leaf: Leaf) -> None:
    """Add ``rollout`` and its verbs to the parser."""
    verbs = nouns.add_parser("rollout", help="progressive rollouts").add_subparsers(
        dest="verb", required=True, metavar="VERB"
    )
    sp = leaf(verbs, "start", start, "move new sessions to RELEASE step by step")
    sp.add_argument("agent")
    sp.add_argument("release")
    sp.add_argument("--steps", required=True, help="canary percentages, e.g. 1,5,25,100")
    sp.add_argument("--interval", required=True, help="time per step, e.g. 10m, 30s, 1h")
    sp.add_argument("--reason", default="")
    provider_change_option(sp)
    gate = sp.add_argument_group(
        "health gate",
        "canary vs stable, overall and per category; any of these (or --health-gate for the "
        "defaults: error-rate delta 0.05, p95 ratio 1.5) turns automatic rollback on",
    )
    gate.add_argument("--health-gate", action="store_true", help="use the default thresholds")
    gate.add_argument(
        "--migrate-on-abort",
        action="store_true",
        help="when the gate aborts, also move the canary's pinned sessions to stable",
    )
    for flag, kind in POLICY_FLAGS.items():
        gate.add_argument("--" + flag.replace("_", "-"), dest=flag, type=kind, default=None)
    sp = leaf(verbs, "status", status, "show an agent's rollout")
    sp.add_argument("agent")
    helps = {
        "pause": "stop the clock; the canary keeps its share",
        "resume": "restart the clock where it stopped",
        "promote": "make the rollout's release stable now",
        "abort": "canary to 0% at once; pinned sessions stay where they are (or --migrate)",
    }
    for verb in ACTIONS:
        sp = leaf(verbs, verb, _action(verb), helps[verb])
        sp.add_argument("agent")
        sp.add_argument("--reason", default="")
        if verb == "abort":
            sp.add_argument(
                "--migrate",
                action="store_true",
                help="also move the aborted release's pinned sessions to stable",
            )
