"""Human output of the canary, switch, shadow and pins commands: pure functions of the API JSON."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from configsvc.cli.render.tables import fields, table, value, when


def pct(v: Any) -> str:
    return f"{v:g}%" if isinstance(v, int | float) and not isinstance(v, bool) else "-"


def num(v: Any, digits: int = 3) -> str:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return f"{v:+.{digits}f}" if digits == 1 else f"{v:.{digits}f}"
    return "-"


def _head(noun: str, body: Mapping[str, Any]) -> str | None:
    if body.get("changed", True):
        return None
    rev = body.get("mod_revision")
    return f"{noun} {body['route']['agent']}: unchanged (revision {rev}; nothing written)"


def canary_change(body: Mapping[str, Any]) -> str:
    r = body["route"]
    unchanged = _head("canary", body)
    if unchanged:
        return unchanged
    rev = body.get("mod_revision")
    if not r.get("canary"):
        return (
            f"canary {r['agent']}: cleared; all new sessions go to {r['stable']} (revision {rev})"
        )
    return (
        f"canary {r['agent']}: {r['canary']} takes {pct(r.get('canary_percent'))} of new "
        f"sessions, the rest go to {r['stable']} (revision {rev})"
    )


def switch_change(body: Mapping[str, Any]) -> str:
    r, before = body["route"], body.get("before") or {}
    probe = body.get("probe") or {}
    detail = str(probe.get("status", "-"))
    if probe.get("latency_ms") is not None:
        detail += f" in {probe['latency_ms']:g} ms"
    lines = [
        f"switch {r['agent']}: stable {value(before.get('stable'))} → {r['stable']} "
        f"(revision {body.get('mod_revision')}; probe {detail})"
    ]
    migration = body.get("migration")
    if migration is not None:
        lines.append(migration_line(migration))
    return "\n".join(lines)


def shadow_change(body: Mapping[str, Any]) -> str:
    r = body["route"]
    unchanged = _head("shadow", body)
    if unchanged:
        return unchanged
    rev = body.get("mod_revision")
    s = r.get("shadow")
    if not s:
        return f"shadow {r['agent']}: cleared (revision {rev})"
    return (
        f"shadow {r['agent']}: {pct(s['percent'])} of requests mirrored to {s['release']} "
        f"from {when(s['since'])}; ready at ≥{s['min_samples']} samples, similarity "
        f"≥{s['min_similarity']:g}, tool agreement ≥{s['min_agreement']:g} (revision {rev})"
    )


def shadow_report(body: Mapping[str, Any]) -> str:
    s, t, total = body["shadow"], body["thresholds"], body["total"]
    verdict = body["verdict"]
    if body.get("reasons"):
        verdict += f" ({'; '.join(body['reasons'])})"
    pairs: list[tuple[str, Any]] = [
        ("agent", body["agent"]),
        ("shadow", f"{s['release']} at {pct(s['percent'])} since {when(s['since'])}"),
        ("verdict", verdict),
        (
            "thresholds",
            f"samples ≥{t['min_samples']}, similarity ≥{t['min_similarity']:g}, "
            f"agreement ≥{t['min_agreement']:g}",
        ),
        ("sidecars", body["sidecars"]),
    ]
    if body.get("unreadable_snapshots"):
        pairs.append(("unreadable", f"{body['unreadable_snapshots']} health snapshot(s) skipped"))
    headers = ["PRIMARY", "SAMPLES", "SIM_MEAN", "SIM_MIN", "AGREE", "TOK_DELTA", "MS_DELTA"]
    headers += ["ERRORS", "SKIPPED"]
    rows = [_figures_row(p, f) for p, f in (body.get("by_primary") or {}).items()]
    rows.append(_figures_row("total", total))
    return fields(pairs) + "\n\n" + table(headers, rows)


def _figures_row(primary: str, f: Mapping[str, Any]) -> list[str]:
    return [
        primary,
        str(f["samples"]),
        num(f.get("mean_similarity")),
        num(f.get("min_similarity")),
        num(f.get("tool_agreement")),
        num(f.get("mean_completion_token_delta"), 1),
        num(f.get("mean_latency_delta_ms"), 1),
        str(f["shadow_errors"]),
        str(f["skipped"]),
    ]


def pins(body: Mapping[str, Any]) -> str:
    found = body.get("pins") or []
    scope = f" on {body['release']}" if body.get("release") else ""
    if not found:
        return f"agent {body['agent']}: no pins{scope}"
    rows = [
        [
            p["session"],
            p["release"],
            when(p.get("pinned_at")),
            when(p.get("touched_at")),
            value(p.get("migrated_from")),
            str(p.get("lease") or "-"),
        ]
        for p in found
    ]
    headers = ["SESSION", "RELEASE", "PINNED", "TOUCHED", "MIGRATED_FROM", "LEASE"]
    shown = f"{len(found)} of {body['total']} pin(s){scope}"
    return table(headers, rows) + "\n" + shown


def pin(body: Mapping[str, Any]) -> str:
    p = body["pin"]
    pairs: list[tuple[str, Any]] = [
        ("agent", p["agent"]),
        ("session", p["session"]),
        ("release", p["release"]),
        ("pinned", when(p.get("pinned_at"))),
        ("touched", when(p.get("touched_at"))),
        ("config_revision", p.get("revision")),
        ("migrated_from", p.get("migrated_from")),
        ("migrated", f"{when(p.get('migrated_at'))} by {value(p.get('migrated_by'))}"),
        ("notified", "yes" if p.get("notified") else "no"),
        ("lease", p.get("lease") or "none"),
        ("mod_revision", p.get("mod_revision")),
    ]
    if not p.get("migrated_from"):
        pairs = [pair for pair in pairs if pair[0] not in ("migrated", "notified")]
    return fields(pairs)


def migration_line(body: Mapping[str, Any]) -> str:
    source = body.get("from") or "any other release"
    share = f" ({pct(body['percent'])} of them)" if body.get("percent") is not None else ""
    return (
        f"pins {body['agent']}: migrated {body['migrated']} session(s) from {source} to "
        f"{body['to']}{share}, skipped {body['skipped']}"
    )
