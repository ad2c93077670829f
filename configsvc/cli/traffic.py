"""``holdfastctl canary|switch|shadow|pins``: where new sessions go, and deliberate migration."""

from __future__ import annotations

import argparse
import math
from typing import Any

from configsvc.cli.client import Client, segment
from configsvc.cli.commands import Leaf, provider_change_option, with_provider_change
from configsvc.cli.render import traffic as show

Result = tuple[dict[str, Any], str]


def _path(agent: str, tail: str) -> str:
    return f"/v1/agents/{segment(agent)}/{tail}"


def _number(text: str) -> float:
    # The range is the API's to check, so that CLI and HTTP callers get the same refusal.
    try:
        number = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return number


def _count(text: str) -> int:
    try:
        return int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from exc


def canary_set(c: Client, a: argparse.Namespace) -> Result:
    payload = {"release": a.release, "percent": a.percent, "reason": a.reason}
    body = c.call("PUT", _path(a.agent, "canary"), with_provider_change(payload, a))
    return body, show.canary_change(body)


def canary_clear(c: Client, a: argparse.Namespace) -> Result:
    body = c.call("DELETE", _path(a.agent, "canary"), {"reason": a.reason})
    return body, show.canary_change(body)


def switch(c: Client, a: argparse.Namespace) -> Result:
    payload: dict[str, Any] = {"back": a.back, "migrate": a.migrate, "reason": a.reason}
    if a.release:
        payload["release"] = a.release
    if a.no_probe:
        payload["probe"] = False
    body = c.call("POST", _path(a.agent, "switch"), with_provider_change(payload, a))
    return body, show.switch_change(body)


def _thresholds(a: argparse.Namespace) -> dict[str, Any]:
    given = {
        "min_samples": a.min_samples,
        "min_similarity": a.min_similarity,
        "min_agreement": a.min_agreement,
    }
    return {k: v for k, v in given.items() if v is not None}


def shadow_set(c: Client, a: argparse.Namespace) -> Result:
    payload = {"release": a.release, "percent": a.percent, "reason": a.reason, **_thresholds(a)}
    body = c.call("PUT", _path(a.agent, "shadow"), with_provider_change(payload, a))
    return body, show.shadow_change(body)


def shadow_clear(c: Client, a: argparse.Namespace) -> Result:
    body = c.call("DELETE", _path(a.agent, "shadow"), {"reason": a.reason})
    return body, show.shadow_change(body)


def shadow_report(c: Client, a: argparse.Namespace) -> Result:
    query = {k: str(v) for k, v in _thresholds(a).items()}
    body = c.call("GET", _path(a.agent, "shadow/report"), query=query or None)
    return body, show.shadow_report(body)


def pins_list(c: Client, a: argparse.Namespace) -> Result:
    query = {"release": a.release or "", "limit": "" if a.limit is None else str(a.limit)}
    body = c.call(
        "GET", _path(a.agent, "pins"), query={k: v for k, v in query.items() if v} or None
    )
    return body, show.pins(body)


def pins_show(c: Client, a: argparse.Namespace) -> Result:
    body = c.call("GET", _path(a.agent, f"pins/{segment(a.session)}"))
    return body, show.pin(body)


def pins_migrate(c: Client, a: argparse.Namespace) -> Result:
    payload: dict[str, Any] = {"from": a.source, "to": a.target, "reason": a.reason}
    if a.session:
        payload["session"] = a.session
    if a.percent is not None:
        payload["percent"] = a.percent
    body = c.call("POST", _path(a.agent, "pins/migrate"), with_provider_change(payload, a))
    return body, show.migration_line(body)


def _threshold_options(sp: Any) -> None:
    sp.add_argument("--min-samples", type=_count, default=None, metavar="N")
    sp.add_argument("--min-similarity", type=_number, default=None, metavar="X", help="0-1")
    sp.add_argument("--min-agreement", type=_number, default=None, metavar="Y", help="0-1")


def _verbs(nouns: Any, noun: str, help_text: str) -> Any:
    return nouns.add_parser(noun, help=help_text).add_subparsers(
        dest="verb", required=True, metavar="VERB"
    )


def register(nouns: Any, leaf: Leaf) -> None:
    """Add ``canary``, ``switch``, ``shadow`` and ``pins`` to the parser."""
    verbs = _verbs(nouns, "canary", "a share of new sessions on another release")
    sp = leaf(verbs, "set", canary_set, "send PERCENT of new sessions to RELEASE")
    sp.add_argument("agent")
    sp.add_argument("release")
    sp.add_argument("--percent", type=_number, required=True, help="0-100")
    sp.add_argument("--reason", default="")
    provider_change_option(sp)
    sp = leaf(verbs, "clear", canary_clear, "all new sessions back to stable")
    sp.add_argument("agent")
    sp.add_argument("--reason", default="")

    sp = leaf(nouns, "switch", switch, "blue-green: every new session to RELEASE at once")
    sp.add_argument("agent")
    sp.add_argument("release", nargs="?", default="")
    sp.add_argument("--back", action="store_true", help="back to the previous stable release")
    sp.add_argument("--migrate", action="store_true", help="move pinned sessions along too")
    sp.add_argument("--no-probe", action="store_true", help="skip the warm-up probe")
    sp.add_argument("--reason", default="")
    provider_change_option(sp)

    verbs = _verbs(nouns, "shadow", "mirror requests to a release and compare the answers")
    sp = leaf(verbs, "set", shadow_set, "mirror PERCENT of requests to RELEASE (a new epoch)")
    sp.add_argument("agent")
    sp.add_argument("release")
    sp.add_argument("--percent", type=_number, required=True, help="0-100")
    _threshold_options(sp)
    sp.add_argument("--reason", default="")
    provider_change_option(sp)
    sp = leaf(verbs, "clear", shadow_clear, "stop mirroring")
    sp.add_argument("agent")
    sp.add_argument("--reason", default="")
    sp = leaf(verbs, "report", shadow_report, "comparisons so far, and a readiness verdict")
    sp.add_argument("agent")
    _threshold_options(sp)

    verbs = _verbs(nouns, "pins", "sessions pinned to releases")
    sp = leaf(verbs, "list", pins_list, "an agent's pinned sessions")
    sp.add_argument("agent")
    sp.add_argument("--release", default=None)
    sp.add_argument("--limit", type=_count, default=None, help="at most N (default 100)")
    sp = leaf(verbs, "show", pins_show, "one session's pin")
    sp.add_argument("agent")
    sp.add_argument("session")
    sp = leaf(verbs, "migrate", pins_migrate, "move pinned sessions to another release")
    sp.add_argument("agent")
    sp.add_argument("--from", dest="source", required=True, metavar="R1")
    sp.add_argument("--to", dest="target", required=True, metavar="R2")
    sp.add_argument("--session", default=None, metavar="S")
    sp.add_argument("--percent", type=_number, default=None, metavar="P", help="(0-100]")
    provider_change_option(sp)
    sp.add_argument("--reason", default="")
