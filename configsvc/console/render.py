"""Server-side rendering: the Jinja2 environment, the console's response headers, fragments.

Autoescaping is on for every template, so whatever a record holds (a reason, an actor, a flag
variant) reaches the page as text. The headers forbid framing, inline script and any origin
but the console's own; charts are inline SVG drawn here, so they need no script at all.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any, Final

from aiohttp import web
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from configsvc.console.charts import format_value, sparkline
from configsvc.console.views import split_checks

CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: with it a browser sends "Origin: null" on the login form's POST, which
    # then cannot be told from a sandboxed frame's.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def ago(at: float | None, now: float | None = None) -> str:
    """How long ago ``at`` was, for a person ("4 s", "3 min", "2 h")."""
    if at is None or not at or not math.isfinite(at):
        return "never"
    return duration((now if now is not None else time.time()) - at)


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def when(at: float | None) -> str:
    if not at or not math.isfinite(at):
        return ""
    return datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


ENV: Final = Environment(
    loader=PackageLoader("configsvc.console", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.globals.update(
    sparkline=sparkline,
    fmt=format_value,
    ago=ago,
    when=when,
    duration=duration,
    split_checks=split_checks,
)


def render(template: str, **context: Any) -> str:
    return ENV.get_template(template).render(**context)


def page(template: str, *, status: int = 200, **context: Any) -> web.Response:
    return web.Response(
        status=status,
        text=render(template, **context),
        content_type="text/html",
        charset="utf-8",
        headers=HEADERS,
    )
