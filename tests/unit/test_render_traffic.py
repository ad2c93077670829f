"""Human output of the traffic commands, from API bodies."""

from __future__ import annotations

from typing import Any

from configsvc.cli.render import traffic as show

ROUTE: dict[str, Any] = {"agent": "support", "stable": "r2", "canary": None, "shadow": None}


def test_switch_with_probe_and_migration() -> None:
    body = {
        "route": ROUTE,
        "before": {"stable": "r1"},
        "mod_revision": 42,
        "probe": {"status": "ok", "latency_ms": 3.5},
        "migration": {"agent": "support", "from": None, "to": "r2", "percent": None,
                      "migrated": 7, "skipped": 1},
    }  # fmt: skip
    assert show.switch_change(body).splitlines() == [
        "switch support: stable r1 → r2 (revision 42; probe ok in 3.5 ms)",
        "pins support: migrated 7 session(s) from any other release to r2, skipped 1",
    ]


def test_canary_lines() -> None:
    on = {**ROUTE, "canary": "r3", "canary_percent": 12.5}
    assert show.canary_change({"route": on, "mod_revision": 5}) == (
        "canary support: r3 takes 12.5% of new sessions, the rest go to r2 (revision 5)"
    )
    assert show.canary_change({"route": ROUTE, "mod_revision": 5, "changed": False}) == (
        "canary support: unchanged (revision 5; nothing written)"
    )


def test_pins_table_and_empty() -> None:
    pin = {"session": "s-1", "release": "r1", "pinned_at": 0, "touched_at": 0,
           "migrated_from": "", "lease": 77}  # fmt: skip
    text = show.pins({"agent": "support", "pins": [pin], "total": 3, "release": "r1"})
    lines = text.splitlines()
    assert lines[0].split() == ["SESSION", "RELEASE", "PINNED", "TOUCHED", "MIGRATED_FROM", "LEASE"]
    assert lines[1].split() == ["s-1", "r1", "-", "-", "-", "77"]
    assert lines[2] == "1 of 3 pin(s) on r1"
    assert show.pins({"agent": "support", "pins": [], "total": 0}) == "agent support: no pins"


def test_migration_line_with_percent() -> None:
    body = {"agent": "a", "from": "r1", "to": "r2", "percent": 50.0, "migrated": 3, "skipped": 0}
    assert show.migration_line(body) == (
        "pins a: migrated 3 session(s) from r1 to r2 (50% of them), skipped 0"
    )
