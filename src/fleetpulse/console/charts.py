"""Plots as inline SVG, drawn on the server: line charts, sparklines and a task's waterfall.

Why not a JavaScript chart library: the console's pages are rendered on the server and the
figures are already aggregated by ClickHouse, so a plot is a few dozen points. Drawing them
here keeps the console free of third-party code (nothing to vendor, pin or audit), makes
every plot visible without JavaScript, lets a test read a plot's points straight from the
HTML, and costs well under a millisecond per plot. Pure functions, no I/O.

Example:
    >>> svg = sparkline([1, 3, 2])
    >>> svg.startswith("<svg") and 'points="' in svg
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape

COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2")
STATUS_COLOURS = {
    "ok": "#16a34a",
    "error": "#dc2626",
    "timeout": "#ea580c",
    "denied": "#6b7280",
    "short_circuited": "#9333ea",
}


@dataclass
class Series:
    name: str
    values: list[float | None]


@dataclass
class Plot:
    """A time-series plot: ``xs`` are epoch seconds, one value per x in every series."""

    title: str
    xs: list[float]
    series: list[Series]
    unit: str = ""
    markers: list[tuple[float, str]] = field(default_factory=list)  # (epoch s, label)


def _fmt(v: float, unit: str) -> str:
    if unit == "%":
        return f"{v * 100:.1f}%"
    if unit == "$":
        return f"${v:,.2f}" if v < 100 else f"${v:,.0f}"
    if unit == "ms" and abs(v) >= 1000:
        return f"{v / 1000:.1f}s"
    if abs(v) >= 1000:
        return f"{v / 1000:.1f}k{unit}"
    return f"{v:.0f}{unit}" if v == int(v) or abs(v) >= 10 else f"{v:.2f}{unit}"


def _clock(x: float, span_s: float) -> str:
    t = datetime.fromtimestamp(x, UTC)
    return t.strftime("%m-%d %H:%M") if span_s >= 43200 else t.strftime("%H:%M")


def line_chart(plot: Plot, *, width: int = 520, height: int = 180) -> str:
    """An SVG line chart with axes, a legend and vertical markers (e.g. activations)."""
    left, right, top, bottom = 52, 10, 22, 22
    w, h = width - left - right, height - top - bottom
    values = [v for s in plot.series for v in s.values if v is not None]
    x0, x1 = (min(plot.xs), max(plot.xs)) if plot.xs else (0.0, 1.0)
    x1 = x1 if x1 > x0 else x0 + 1
    top_v = max(values) if values else 0.0
    top_v = top_v * 1.1 if top_v > 0 else 1.0

    def px(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * w

    def py(v: float) -> float:
        return top + h - v / top_v * h

    title = escape(plot.title)
    out = [
        f'<svg class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{title}" data-points="{len(values)}">',
        f'<text x="{left}" y="14" class="plot-title">{title}</text>',
        f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="#9ca3af"/>',
    ]
    for frac in (0.0, 0.5, 1.0):
        v = top_v / 1.1 * frac
        y = py(v)
        out.append(
            f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end" class="axis">'
            f"{escape(_fmt(v, plot.unit))}</text>"
        )
        if frac:
            out.append(
                f'<line x1="{left}" y1="{y:.1f}" x2="{left + w}" y2="{y:.1f}" stroke="#e5e7eb"/>'
            )
    if plot.xs:
        for x, anchor in ((x0, "start"), (x1, "end")):
            out.append(
                f'<text x="{px(x):.1f}" y="{height - 6}" text-anchor="{anchor}" class="axis">'
                f"{_clock(x, x1 - x0)}</text>"
            )
    for at, label in plot.markers:
        if x0 <= at <= x1:
            x = px(at)
            out.append(
                f'<line class="marker" x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + h}" '
                f'stroke="#111827" stroke-dasharray="3,3"><title>{escape(label)}</title></line>'
            )
    if not values:
        out.append(
            f'<text x="{left + w / 2}" y="{top + h / 2}" text-anchor="middle" class="axis">'
            "no data in this period</text>"
        )
    for i, s in enumerate(plot.series):
        colour = COLOURS[i % len(COLOURS)]
        for run in _runs(plot.xs, s.values):
            pts = " ".join(f"{px(x):.1f},{py(v):.1f}" for x, v in run)
            if len(run) == 1:
                x, v = run[0]
                out.append(f'<circle cx="{px(x):.1f}" cy="{py(v):.1f}" r="2" fill="{colour}"/>')
            else:
                out.append(
                    f'<polyline class="series" data-series="{escape(s.name)}" fill="none" '
                    f'stroke="{colour}" stroke-width="1.5" points="{pts}"/>'
                )
        lx = left + 8 + i * 90
        out.append(f'<rect x="{lx}" y="{top - 2}" width="8" height="8" fill="{colour}"/>')
        out.append(f'<text x="{lx + 11}" y="{top + 6}" class="legend">{escape(s.name)}</text>')
    out.append("</svg>")
    return "".join(out)


def _runs(xs: Sequence[float], values: Sequence[float | None]) -> list[list[tuple[float, float]]]:
    """Consecutive points with a value: a gap (None) breaks the line."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, v in zip(xs, values, strict=False):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((x, float(v)))
    return [r for r in runs if r]


def sparkline(values: Sequence[float], *, width: int = 100, height: int = 22) -> str:
    """A tiny line of ``values`` (e.g. tasks per bucket), scaled to its own maximum."""
    if not values:
        return f'<svg class="spark" width="{width}" height="{height}"></svg>'
    top = max(values) or 1.0
    step = width / max(len(values) - 1, 1)
    pts = " ".join(
        f"{i * step:.1f},{height - 1 - v / top * (height - 2):.1f}" for i, v in enumerate(values)
    )
    return (
        f'<svg class="spark" viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
        f'<polyline fill="none" stroke="#2563eb" stroke-width="1.2" points="{pts}"/></svg>'
    )


def waterfall(calls: Sequence[dict[str, object]], *, width: int = 640) -> str:
    """A task's tool calls as bars on one time axis: ``offset_ms`` from the first call's
    start, ``latency_ms``, ``label`` and ``status`` per call."""
    row, left = 20, 200
    height = row * len(calls) + 24
    end = max((float(c["offset_ms"]) + float(c["latency_ms"]) for c in calls), default=1.0)  # type: ignore[arg-type]
    end = end or 1.0
    scale = (width - left - 60) / end
    out = [f'<svg class="waterfall" viewBox="0 0 {width} {height}" width="{width}" '
           f'height="{height}" role="img" aria-label="tool calls">']  # fmt: skip
    for i, c in enumerate(calls):
        y = 4 + i * row
        x = left + float(c["offset_ms"]) * scale  # type: ignore[arg-type]
        bw = max(float(c["latency_ms"]) * scale, 1.5)  # type: ignore[arg-type]
        colour = STATUS_COLOURS.get(str(c["status"]), "#6b7280")
        label = escape(str(c["label"]))
        out.append(f'<text x="0" y="{y + 13}" class="axis">{label}</text>')
        out.append(
            f'<rect class="call" data-status="{escape(str(c["status"]))}" x="{x:.1f}" y="{y}" '
            f'width="{bw:.1f}" height="{row - 6}" fill="{colour}"><title>{label}: '
            f"{escape(str(c['status']))}, {float(c['latency_ms']):.0f} ms</title></rect>"  # type: ignore[arg-type]
        )
        out.append(
            f'<text x="{x + bw + 4:.1f}" y="{y + 13}" class="axis">'
            f"{float(c['latency_ms']):.0f} ms</text>"  # type: ignore[arg-type]
        )
    out.append(
        f'<text x="{left}" y="{height - 4}" class="axis">0 ms</text>'
        f'<text x="{width - 60}" y="{height - 4}" class="axis">{end:.0f} ms</text></svg>'
    )
    return "".join(out)
