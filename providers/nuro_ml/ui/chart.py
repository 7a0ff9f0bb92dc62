"""The GPU usage chart as inline SVG: stacked bars per team per time bucket, capacity line.

Drawn on the server so the page needs no charting library (the UI may run without
internet access) and shows the chart even with scripts disabled.
"""

from __future__ import annotations

from markupsafe import Markup, escape

from nuro_ml.capacity.view import Usage

WIDTH, HEIGHT = 760, 220
LEFT, RIGHT, TOP, BOTTOM = 40, 10, 10, 28
#: Colour-blind-safe palette (Okabe-Ito), cycled through teams in name order.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def _colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def usage_svg(usage: Usage) -> Markup:
    """SVG of GPUs held per team over the window, with the total pool capacity as a dashed line."""
    count = len(usage.buckets)
    totals = [sum(series.gpus[i] for series in usage.series) for i in range(count)]
    top = max([usage.capacity, *totals, 1])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    bar_w = plot_w / max(count, 1)

    def y(value: float) -> float:
        return TOP + plot_h - value / top * plot_h

    parts = [
        f'<svg class="usage-chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="GPUs in use per team over the last {count} intervals">',
        f'<line x1="{LEFT}" y1="{y(0):.1f}" x2="{WIDTH - RIGHT}" y2="{y(0):.1f}" class="axis"/>',
        f'<text x="{LEFT - 6}" y="{y(top) + 4:.1f}" text-anchor="end" class="tick">{top:g}</text>',
        f'<text x="{LEFT - 6}" y="{y(0) + 4:.1f}" text-anchor="end" class="tick">0</text>',
    ]
    for index in range(count):
        base = 0.0
        x = LEFT + index * bar_w
        for colour_index, series in enumerate(usage.series):
            value = series.gpus[index]
            if value <= 0:
                continue
            colour = _colour(colour_index)
            parts.append(
                f'<rect x="{x + 1:.1f}" y="{y(base + value):.1f}" width="{max(bar_w - 2, 1):.1f}" '
                f'height="{y(base) - y(base + value):.1f}" fill="{colour}" data-team="{escape(series.team)}">'
                f"<title>{escape(series.team)}: {value:.2f} GPUs at "
                f"{usage.buckets[index]:%Y-%m-%d %H:%M} UTC</title></rect>"
            )
            base += value
        if index % max(1, count // 6) == 0:
            parts.append(
                f'<text x="{x:.1f}" y="{HEIGHT - 8}" class="tick">{usage.buckets[index]:%H:%M}</text>'
            )
    if usage.capacity:
        level = y(usage.capacity)
        parts.append(
            f'<line x1="{LEFT}" y1="{level:.1f}" x2="{WIDTH - RIGHT}" y2="{level:.1f}" class="capacity">'
            f"<title>capacity: {usage.capacity} GPUs</title></line>"
        )
    parts.append("</svg>")
    legend = "".join(
        f'<span class="legend-item"><span class="swatch" style="background:{_colour(i)}"></span>'
        f"{escape(series.team)}</span>"
        for i, series in enumerate(usage.series)
    )
    return Markup("".join(parts) + f'<div class="legend">{legend}</div>')
