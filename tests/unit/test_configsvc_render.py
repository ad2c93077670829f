"""holdfastctl's human output: pure functions of the API's JSON."""

from __future__ import annotations

from typing import Any

from configsvc.cli.render import tables as render

ROUTE_BEFORE: dict[str, Any] = {
    "agent": "support",
    "stable": "r1",
    "previous_stable": None,
    "aliases": [],
    "updated_at": 1.0,
    "updated_by": "token:a",
}
ROUTE_AFTER = {**ROUTE_BEFORE, "stable": "r2", "previous_stable": "r1", "updated_at": 2.0}
RELEASE = {
    "agent": "support",
    "release": "r1",
    "model": "gpt-4o-mini",
    "base_url": "http://h/v1",
    "api_key_env": "",
    "provider": "openai",
    "created_at": 1_700_000_000.0,
    "created_by": "token:alice",
    "description": "",
    "mod_revision": 7,
}


def test_when() -> None:
    assert render.when(1_700_000_000) == "2023-11-14 22:13:20Z"
    assert render.when(0) == "-"
    assert render.when(None) == "-"
    assert render.when(True) == "-"


def test_value_and_cell() -> None:
    assert render.value(None) == "-"
    assert render.value("") == "-"
    assert render.value([]) == "[]"
    assert render.value(["a", "b"]) == "a,b"
    assert render.value({"b": 1, "a": None}) == "{a=-, b=1}"
    assert render.cell("x" * 100).endswith("…")
    assert len(render.cell("x" * 100)) == render.MAX_CELL
    assert render.cell("two\nlines") == "two lines"


def test_table_aligns_columns_and_trims_trailing_space() -> None:
    out = render.table(["A", "LONGER"], [["xyz", "1"], ["q", ""]])
    assert out.splitlines() == ["A    LONGER", "xyz  1", "q"]


def test_summarize_route_change_names_stable_first_and_hides_bookkeeping() -> None:
    summary = render.summarize(ROUTE_BEFORE, ROUTE_AFTER)
    assert summary == "stable r1→r2, previous_stable -→r1"


def test_summarize_creation_and_no_change() -> None:
    created = render.summarize(None, RELEASE)
    assert created.startswith("created release=r1 model=gpt-4o-mini base_url=http://h/v1")
    assert "created_by" not in created
    assert render.summarize(ROUTE_BEFORE, {**ROUTE_BEFORE, "updated_at": 9.0}) == "no change"
    assert render.summarize(None, None) == "-"


def test_release_views() -> None:
    assert render.release_created({"release": RELEASE}) == (
        "created release support/r1: model gpt-4o-mini at http://h/v1 (revision 7)"
    )
    listing = render.releases({"agent": "support", "releases": [RELEASE]}).splitlines()
    assert listing[0].split() == [
        "RELEASE", "MODEL", "BASE_URL", "KEY_ENV", "CREATED", "BY", "DESCRIPTION"
    ]  # fmt: skip
    assert listing[1].split()[:3] == ["r1", "gpt-4o-mini", "http://h/v1"]
    shown = render.release({"release": RELEASE})
    assert "model:        gpt-4o-mini" in shown
    assert "created_by:   token:alice" in shown


def test_route_change_first_line_says_what_happened() -> None:
    body: dict[str, Any] = {"route": ROUTE_AFTER, "before": ROUTE_BEFORE, "mod_revision": 9}
    first = render.route_change("set-stable", {**body, "changed": True}).splitlines()[0]
    assert first == "route support: stable r1 → r2 (revision 9)"
    first = render.route_change("rollback", {**body, "changed": True}).splitlines()[0]
    assert first == "route support: rolled back r1 → r2 (revision 9)"
    first = render.route_change("set-stable", {**body, "changed": False}).splitlines()[0]
    assert first == "route support: unchanged (revision 9; nothing written)"
    aliased = {**body, "route": {**ROUTE_AFTER, "aliases": ["a", "b"]}, "changed": True}
    assert render.route_change("aliases", aliased).splitlines()[0] == (
        "route support: aliases a,b (revision 9)"
    )
    assert "mod_revision:    9" in render.route_change("set-stable", body)


def test_history_table() -> None:
    entry = {
        "revision": 12,
        "at": 1_700_000_000.0,
        "actor": "token:alice",
        "action": "route.set_stable",
        "target": "routes/support",
        "reason": "try r2",
        "before": ROUTE_BEFORE,
        "after": ROUTE_AFTER,
    }
    lines = render.history({"entries": [entry]}).splitlines()
    assert lines[0].split() == [
        "REVISION", "WHEN", "ACTOR", "ACTION", "TARGET", "REASON", "CHANGE"
    ]  # fmt: skip
    assert lines[1].startswith("12        2023-11-14 22:13:20Z  token:alice  route.set_stable")
    assert lines[1].endswith("stable r1→r2, previous_stable -→r1")
    assert render.history({"entries": []}) == "no history"
