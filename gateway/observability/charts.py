"""Charts for the dashboard as server-rendered SVG: stacked bars and lines over time buckets.

Pure functions over plain numbers; no Django import. Chosen over a JavaScript charting library:
nothing to download or serve, nothing for the Content-Security-Policy to allow (no script, no
inline style: colours and sizes come from the stylesheet through class names), and a chart reads
the same with scripts off.

Invariants:
- Every text that lands in the markup (labels, names, links) is escaped here; the caller may
  mark the result safe.
- Each time bucket is one column: a full-height transparent target carrying the bucket's tooltip
  (`<title>`) and, when given, its link, so even a zero-height bar can be hovered and clicked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH = 520
"""In the viewBox's units; the stylesheet scales the chart to its box."""
HEIGHT = 200
LEFT = 58
"""Room for the value axis labels."""
RIGHT = 8
TOP = 10
BOTTOM = 22
"""Room for the time axis labels."""
X_LABELS = 5
"""About this many time labels, whatever the number of buckets."""


@dataclass(frozen=True, slots=True)
class Layer:
    """One series: `css` names its colour in the stylesheet (`layer-<css>`)."""

    name: str
    css: str
    values: Sequence[float | None]
    """One per bucket; None is no value (a line breaks there, a bar counts it as 0)."""


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten that is at least `value` (1 for 0)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value * (1 - 1e-9):
            return float(step * power)
    return float(10 * power)  # pragma: no cover - the loop always returns


def bars_svg(
    *,
    title: str,
    labels: Sequence[str],
    layers: Sequence[Layer],
    value_text: Callable[[float], str],
    links: Sequence[str | None] = (),
) -> str:
    """Stacked bars, one column per label, the first layer at the bottom."""
    totals = [sum(layer.values[i] or 0.0 for layer in layers) for i in range(len(labels))]
    top = nice_ceiling(max(totals, default=0.0))
    slot = _slot(len(labels))
    gap = min(2.0, slot * 0.2)
    marks: list[str] = []
    for index in range(len(labels)):
        x = LEFT + index * slot + gap / 2
        base = 0.0
        for layer in layers:
            value = layer.values[index] or 0.0
            if value <= 0:
                continue
            y0, y1 = _y(base, top), _y(base + value, top)
            marks.append(
                f'<rect class="layer-{escape(layer.css)}" x="{x:.1f}" y="{y1:.1f}" '
                f'width="{slot - gap:.1f}" height="{max(y0 - y1, 0.5):.1f}"/>'
            )
            base += value
    return _frame(title, labels, layers, top, value_text, marks, links)


def lines_svg(
    *,
    title: str,
    labels: Sequence[str],
    layers: Sequence[Layer],
    value_text: Callable[[float], str],
    links: Sequence[str | None] = (),
) -> str:
    """One line per layer, a point at the middle of each bucket; a None breaks the line."""
    top = nice_ceiling(max((v for layer in layers for v in layer.values if v is not None), default=0.0))
    slot = _slot(len(labels))
    marks: list[str] = []
    for layer in layers:
        runs: list[list[str]] = [[]]
        for index, value in enumerate(layer.values):
            if value is None:
                runs.append([])
                continue
            runs[-1].append(f"{LEFT + (index + 0.5) * slot:.1f},{_y(value, top):.1f}")
        for run in runs:
            if len(run) == 1:  # a lone point between gaps would draw nothing as a line
                x, y = run[0].split(",")
                marks.append(f'<circle class="layer-{escape(layer.css)}" cx="{x}" cy="{y}" r="2"/>')
            elif run:
                marks.append(f'<polyline class="layer-{escape(layer.css)}" points="{" ".join(run)}"/>')
    return _frame(title, labels, layers, top, value_text, marks, links)


def _slot(count: int) -> float:
    return (WIDTH - LEFT - RIGHT) / max(count, 1)


def _y(value: float, top: float) -> float:
    return TOP + (HEIGHT - TOP - BOTTOM) * (1 - value / top)


def _frame(
    title: str,
    labels: Sequence[str],
    layers: Sequence[Layer],
    top: float,
    value_text: Callable[[float], str],
    marks: list[str],
    links: Sequence[str | None],
) -> str:
    """The axes, grid, marks and the per-bucket targets around `marks`."""
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" '
        'xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for fraction in (0.0, 0.5, 1.0):
        y = _y(top * fraction, top)
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>')
        tick = escape(value_text(top * fraction))
        parts.append(f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>')
    slot = _slot(len(labels))
    every = max(1, math.ceil(len(labels) / X_LABELS))
    for index in range(0, len(labels), every):
        parts.append(
            f'<text class="axis" x="{LEFT + index * slot:.1f}" y="{HEIGHT - 6}" text-anchor="start">'
            f"{escape(labels[index])}</text>"
        )
    parts.extend(marks)
    for index, label in enumerate(labels):
        lines = [label] + [
            f"{layer.name}: {'no data' if layer.values[index] is None else value_text(layer.values[index] or 0.0)}"
            for layer in layers
        ]
        target = (
            f'<rect class="target" x="{LEFT + index * slot:.1f}" y="{TOP}" width="{slot:.1f}" '
            f'height="{HEIGHT - TOP - BOTTOM}"><title>{escape(chr(10).join(lines))}</title></rect>'
        )
        link = links[index] if index < len(links) else None
        parts.append(f'<a href="{escape(link)}">{target}</a>' if link else target)
    parts.append("</svg>")
    return "".join(parts)
