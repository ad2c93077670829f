"""Human output of ``holdfastctl``: compact tables and ``key: value`` lines from the API's JSON.

Pure functions of the API's response bodies, so ``--json`` and human output never disagree.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any, Final

# Bookkeeping fields that every change touches; the change summary leaves them out.
QUIET_FIELDS: Final = frozenset({"agent", "updated_at", "updated_by", "created_at", "created_by"})
# The fields a change summary names first; any other field follows in name order.
LEADING_FIELDS: Final = ("stable", "previous_stable", "aliases", "release", "model", "base_url")
MAX_CELL: Final = 60
# Inside nested maps: bookkeeping an operator does not need in a one-line summary.
NESTED_QUIET: Final = frozenset({"elapsed", "started_by", "since"})


def when(ts: Any) -> str:
    if not isinstance(ts, int | float) or isinstance(ts, bool) or ts <= 0:
        return "-"
    moment = dt.datetime.fromtimestamp(ts, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def value(v: Any) -> str:
    if v is None or v == "":
        return "-"
    if isinstance(v, list | tuple):
        return ",".join(value(x) for x in v) if v else "[]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}={value(x)}" for k, x in sorted(v.items())) + "}"
    return str(v)


def cell(v: Any) -> str:
    text = value(v).replace("\n", " ")
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = []
    for row in [list(headers), *rows]:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


def fields(pairs: Sequence[tuple[str, Any]]) -> str:
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{(k + ':').ljust(width + 1)} {value(v)}" for k, v in pairs)


def _ordered(keys: set[str]) -> list[str]:
    leading = [k for k in LEADING_FIELDS if k in keys]
    return leading + sorted(keys - set(leading) - QUIET_FIELDS)


def summarize(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str:
    """One line of what changed: ``stable r1→r2`` or, for a new record, its notable fields.

    Nested maps (a route's rollout or shadow) show only their changed fields, dotted, without
    their timestamps: ``rollout.step 0→1``.
    """
    if before is None and after is None:
        return "-"
    if before is None or after is None:
        shown = after if after is not None else before
        assert shown is not None
        verb = "created" if before is None else "deleted"
        notable = [f"{k}={value(shown[k])}" for k in _ordered(set(shown)) if shown[k]]
        return f"{verb} " + " ".join(notable)
    return ", ".join(_changes(before, after, "")) or "no change"


def _changes(before: Mapping[str, Any], after: Mapping[str, Any], prefix: str) -> list[str]:
    out: list[str] = []
    keys = set(before) | set(after)
    for k in _ordered(keys) if not prefix else sorted(keys):
        old, new = before.get(k), after.get(k)
        if old == new or (prefix and (k.endswith("_at") or k in NESTED_QUIET)):
            continue
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            out += _changes(old, new, f"{prefix}{k}.")
        elif isinstance(new, Mapping) and old is None:
            out.append(f"{prefix}{k} set ({_brief(new)})")
        elif isinstance(old, Mapping) and new is None:
            out.append(f"{prefix}{k} cleared")
        else:
            out.append(f"{prefix}{k} {value(old)}→{value(new)}")
    return out


def _brief(record: Mapping[str, Any]) -> str:
    return " ".join(
        f"{k}={value(v)}"
        for k, v in sorted(record.items())
        if v not in (None, "", 0, 0.0) and not k.endswith("_at") and k not in NESTED_QUIET
    )


def release_created(body: Mapping[str, Any]) -> str:
    r = body["release"]
    return (
        f"created release {r['agent']}/{r['release']}: model {r['model']} at {r['base_url']} "
        f"(revision {r['mod_revision']})"
    )


def releases(body: Mapping[str, Any]) -> str:
    rows = [
        [
            r["release"],
            r["model"],
            r["base_url"],
            value(r.get("api_key_env")),
            when(r.get("created_at")),
            value(r.get("created_by")),
            cell(r.get("description")),
        ]
        for r in body["releases"]
    ]
    headers = ["RELEASE", "MODEL", "BASE_URL", "KEY_ENV", "CREATED", "BY", "DESCRIPTION"]
    return table(headers, rows)


def _embeddings(r: Mapping[str, Any]) -> str | None:
    """The release's embedding model and its index version, if it names one."""
    model, index = r.get("embedding_model"), r.get("index_version")
    if not model:
        return None
    return f"{model} (index {index})" if index else str(model)


def _pinned_contracts(r: Mapping[str, Any]) -> str | None:
    """The tool contracts a release pins, ``tool=version, ...`` and the policy that overrides
    each contract's own, if any; None when it pins none."""
    pins = sorted((r.get("contracts") or {}).items())
    text = ", ".join(f"{tool}={version}" for tool, version in pins)
    policy = r.get("contract_policy")
    return (f"{text} (policy {policy} for all)" if policy else text) if text else None


def release(body: Mapping[str, Any]) -> str:
    r = body["release"]
    return fields(
        [
            ("agent", r["agent"]),
            ("release", r["release"]),
            ("model", r["model"]),
            ("base_url", r["base_url"]),
            ("api_key_env", r.get("api_key_env")),
            ("provider", r.get("provider")),
            ("api_version", r.get("api_version")),
            ("description", r.get("description")),
            ("contracts", _pinned_contracts(r)),
            ("embeddings", _embeddings(r)),
            ("created", when(r.get("created_at"))),
            ("created_by", r.get("created_by")),
            ("mod_revision", r.get("mod_revision")),
        ]
    )


def route(body: Mapping[str, Any]) -> str:
    r = body["route"]
    return fields(
        [
            ("agent", r["agent"]),
            ("stable", r["stable"]),
            ("previous_stable", r.get("previous_stable")),
            ("aliases", r.get("aliases") or []),
            ("updated", when(r.get("updated_at"))),
            ("updated_by", r.get("updated_by")),
            ("mod_revision", body.get("mod_revision")),
        ]
    )


def route_change(action: str, body: Mapping[str, Any]) -> str:
    """First line says what happened (scripts and the demo print it); the route follows."""
    r, before = body["route"], body.get("before") or {}
    rev = body.get("mod_revision")
    agent = r["agent"]
    if not body.get("changed", True):
        head = f"route {agent}: unchanged (revision {rev}; nothing written)"
    elif action == "aliases":
        head = f"route {agent}: aliases {value(r.get('aliases') or [])} (revision {rev})"
    else:
        verb = "rolled back" if action == "rollback" else "stable"
        head = (
            f"route {agent}: {verb} {value(before.get('stable'))} → {r['stable']} (revision {rev})"
        )
    return head + "\n" + route(body)


def history(body: Mapping[str, Any]) -> str:
    entries = body.get("entries") or []
    if not entries:
        return "no history"
    rows = [
        [
            str(e["revision"]),
            when(e.get("at")),
            value(e.get("actor")),
            value(e.get("action")),
            value(e.get("target")),
            cell(e.get("reason")),
            summarize(e.get("before"), e.get("after")),
        ]
        for e in entries
    ]
    return table(["REVISION", "WHEN", "ACTOR", "ACTION", "TARGET", "REASON", "CHANGE"], rows)
