"""Small time-series charts as inline SVG, drawn on the server (no script, no chart library):
a polyline per series, broken where a sample has no value, scaled from 0 (or the unit's
fixed range) to the series' highest value. Pure."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Final

from markupsafe import Markup

WIDTH: Final = 180
HEIGHT: Final = 36
PAD: Final = 2.0
FIXED_TOP: Final = {"rate": 1.0, "ratio": 1.0}


def format_value(value: float | None, unit: str) -> str:
    """A figure as a person reads it (an en dash for none)."""
    if value is None or not math.isfinite(value):
        return "\u2013"
    if unit == "rate":
        return f"{value * 100:.2f}%" if value < 0.1 else f"{value * 100:.1f}%"
    if unit == "ms":
        return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"
    if unit == "usd":
        return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"
    if unit == "ratio":
        return f"{value:.3f}"
    if value >= 10_000:
        return f"{value / 1000:,.1f}k"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.2f}"


def _segments(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for i, v in enumerate(values):
        if v is None or not math.isfinite(v):
            if current:
                runs.append(current)
                current = []
            continue
        current.append((i, v))
    if current:
        runs.append(current)
    return runs


def sparkline(
    values: Sequence[float | None],
    *,
    unit: str,
    label: str,
    css: str = "",
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Markup:
    """An SVG chart of ``values`` (oldest first); its title names the newest value."""
    present = [v for v in values if v is not None and math.isfinite(v)]
    last = next((v for v in reversed(values) if v is not None), None)
    title = html.escape(f"{label}: {format_value(last, unit)}")
    top = FIXED_TOP.get(unit) or (max(present) if present else 1.0) or 1.0
    n = max(len(values) - 1, 1)
    span_y = height - 2 * PAD
    parts = [
        f'<svg class="spark {html.escape(css)}" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{title}"><title>{title}</title>',
        f'<line class="base" x1="0" y1="{height - PAD}" x2="{width}" y2="{height - PAD}"/>',
    ]
    for run in _segments(values):
        points = " ".join(
            f"{PAD + (width - 2 * PAD) * i / n:.1f},{height - PAD - span_y * min(v / top, 1.0):.1f}"
            for i, v in run
        )
        if len(run) == 1:
            x, y = points.split(",")
            parts.append(f'<circle cx="{x}" cy="{y}" r="1.5"/>')
        else:
            parts.append(f'<polyline points="{points}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704  # built from numbers and escaped text only
