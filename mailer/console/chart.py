"""The overview's charts, drawn as inline SVG from plain numbers (no JavaScript, nothing
loaded). Pure: values in, markup out; every piece of text is escaped here.

A stacked bar per day, a y axis with a rounded top labelled at both ends (a phone shows the
chart scrolled to its right end, today), and a `<title>` plus an `aria-label` summarising the
totals for screen readers (the page also has a data table). The legend is a drawing of its own
(`legend`), so it stays in view while the bars scroll sideways.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

from markupsafe import Markup

# Colours with at least 3:1 contrast against white (WCAG 1.4.11 non-text contrast).
PALETTE: tuple[str, ...] = ("#1d70b8", "#d4351c", "#00703c", "#6f3c97", "#b58840")

WIDTH = 900
HEIGHT = 260
LEFT = 56
BOTTOM = 36
TOP = 16
RIGHT = 48


def nice_top(value: int) -> int:
    """A round number at or above `value` for the top of the axis (1, 2, 5 × 10^n)."""
    if value <= 0:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return int(step * power)
    return int(10 * power)  # pragma: no cover - the loop always returns


def stacked_bars(title: str, days: Sequence[str], series: Mapping[str, Sequence[int]],
                 labels: Mapping[str, str] | None = None) -> Markup:
    """A stacked bar chart: one bar per day, one colour per series."""
    labels = labels or {name: name for name in series}
    totals = [sum(values[i] for values in series.values()) for i in range(len(days))]
    top = nice_top(max(totals, default=0))
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(days), 1)
    bar_w = max(slot * 0.8, 1.0)
    summary = "; ".join(f"{labels[name]}: {sum(values)}" for name, values in series.items())
    span = f"{days[0]} to {days[-1]}" if days else "no days"
    aria = f"{title}, {span}. Totals: {summary}."
    parts: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'role="img" aria-label="{escape(aria)}" class="chart">',
        f"<title>{escape(aria)}</title>",
    ]
    for tick in sorted({0, top // 2, top}):
        y = TOP + plot_h - plot_h * tick / top
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                     'stroke="#b1b4b6" stroke-width="1"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="12" '
                     f'fill="#0b0c0c">{tick}</text>')
        parts.append(f'<text x="{WIDTH - RIGHT + 6}" y="{y + 4:.1f}" font-size="12" '
                     f'fill="#0b0c0c">{tick}</text>')
    for i, day in enumerate(days):
        x = LEFT + i * slot + (slot - bar_w) / 2
        y = TOP + plot_h
        for index, (name, values) in enumerate(series.items()):
            value = values[i]
            if value <= 0:
                continue
            h = plot_h * value / top
            y -= h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w:.1f}" height="{h:.1f}" '
                f'fill="{PALETTE[index % len(PALETTE)]}"><title>{escape(day)} '
                f'{escape(labels[name])}: {value}</title></rect>')
        if i % 15 == 0 or i == len(days) - 1:
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{TOP + plot_h + 16}" '
                         f'text-anchor="middle" font-size="12" fill="#0b0c0c">'
                         f"{escape(day[5:])}</text>")
    parts.append("</svg>")
    return Markup("".join(parts))


def legend(names: Sequence[str], labels: Mapping[str, str] | None = None) -> Markup:
    """The key to `stacked_bars`' colours (same order): a list that wraps on a narrow screen,
    each entry a swatch (a tiny SVG: its `fill` is an attribute, which the CSP allows where a
    `style` attribute would not be) and its label."""
    labels = labels or {name: name for name in names}
    items = "".join(
        f'<li><svg width="14" height="14" viewBox="0 0 14 14" aria-hidden="true">'
        f'<rect width="14" height="14" fill="{PALETTE[index % len(PALETTE)]}"/></svg>'
        f"{escape(labels[name])}</li>"
        for index, name in enumerate(names))
    return Markup(f'<ul class="legend">{items}</ul>')
